/* fuzz_ws.c: the WebSocket helper's protocol code, which sees client frames and Docker's
 * streams: client frame parsing, the multiplexed-stream demuxer (fed in arbitrary pieces),
 * UTF-8 boundaries, and output frames, which must parse back to exactly the bytes they carry.
 * The first byte picks the target. */
#include "config.h"
#include "cm.h"
#include "json.h"
#include "frames.h"

#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t total;

static int count(int stream, const unsigned char *d, size_t n, void *ud)
{
	(void)d;
	(void)ud;
	if (stream != 1 && stream != 2)
		abort();
	total += n;
	return 0;
}

/* ws_frame_data's output, parsed back, must give the same bytes */
static void roundtrip(const unsigned char *d, size_t n)
{
	struct cm_buf b = {0};
	if (ws_frame_data(&b, "stdout", d, n) < 0)
		abort();
	/* yajl itself: the strict request parser refuses \u0000, which output may carry */
	char *text = malloc(b.len + 1);
	if (!text)
		return;
	memcpy(text, b.data, b.len);
	text[b.len] = '\0';
	yajl_val v = yajl_tree_parse(text, NULL, 0);
	free(text);
	if (!v)
		abort();
	const char *enc = cm_json_get_str(v, "encoding");
	const char *s = cm_json_get_str(v, "data");
	if (!enc || !s)
		abort();
	if (!strcmp(enc, "utf8")) {
		if (!cm_valid_utf8((const char *)d, n) || (!memchr(d, 0, n) && (strlen(s) != n || memcmp(s, d, n))))
			abort();
	} else {
		unsigned char *out = malloc(n + 4);
		int m = out ? EVP_DecodeBlock(out, (const unsigned char *)s, (int)strlen(s)) : -1;
		/* EVP_DecodeBlock counts padding bytes as data */
		if (m < 0 || (size_t)m < n || memcmp(out, d, n))
			abort();
		free(out);
	}
	yajl_tree_free(v);
	cm_buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2 || size > 65536)
		return 0;
	const unsigned char *p = data + 1;
	size_t n = size - 1;
	switch (data[0] % 4) {
	case 0: {
		struct ws_cmd c;
		char why[200];
		if (ws_cmd_parse((const char *)p, n, &c, why, sizeof why) == 0) {
			if (c.type == WS_CMD_STDIN && c.len > n)
				abort();
			ws_cmd_free(&c);
		} else if (!why[0]) {
			abort();
		}
		break;
	}
	case 1: {
		/* the first byte of the rest picks the piece size */
		struct ws_demux d = {0};
		size_t step = 1 + p[0] % 17, payload = 0;
		total = 0;
		for (size_t i = 1; i < n; i += step) {
			size_t k = n - i < step ? n - i : step;
			if (ws_demux_feed(&d, p + i, k, count, NULL) < 0)
				break;
		}
		(void)payload;
		if (total > n)
			abort();
		break;
	}
	case 2: {
		size_t cut = ws_utf8_boundary(p, n);
		size_t vp = ws_utf8_valid_prefix(p, n);
		if (cut > n || n - cut > 3 || vp > n || !cm_valid_utf8((const char *)p, vp))
			abort();
		if (cm_valid_utf8((const char *)p, n) && (vp != n || cut != n))
			abort();
		break;
	}
	case 3:
		roundtrip(p, n);
		break;
	}
	return 0;
}
