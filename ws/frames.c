/* frames.c: see frames.h. */
#include "config.h"
#include "frames.h"
#include "json.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <openssl/evp.h>

void ws_cmd_free(struct ws_cmd *cmd)
{
	free(cmd->data);
	cmd->data = NULL;
	cmd->len = 0;
}

int ws_signal_number(const char *name)
{
	static const struct {
		const char *name;
		int signo;
	} sigs[] = {{"INT", SIGINT}, {"TERM", SIGTERM}, {"KILL", SIGKILL}, {"HUP", SIGHUP}, {"QUIT", SIGQUIT}};
	if (!strncmp(name, "SIG", 3))
		name += 3;
	for (size_t i = 0; i < CM_ARRAY_LEN(sigs); i++)
		if (!strcmp(name, sigs[i].name))
			return sigs[i].signo;
	return 0;
}

/* Strict standard base64 (RFC 4648 §4): padding optional, nothing else tolerated. */
static long b64_decode(unsigned char *out, const char *in, size_t n)
{
	static signed char tbl[256];
	static int ready;
	if (!ready) {
		memset(tbl, -1, sizeof tbl);
		const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
		for (int i = 0; i < 64; i++)
			tbl[(unsigned char)a[i]] = (signed char)i;
		ready = 1;
	}
	while (n > 0 && in[n - 1] == '=' && (n % 4) != 1)
		n--;
	if (n % 4 == 1)
		return -1;
	uint32_t acc = 0;
	int bits = 0;
	long o = 0;
	for (size_t i = 0; i < n; i++) {
		int v = tbl[(unsigned char)in[i]];
		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
	}
	/* leftover bits must be zero (one canonical encoding) */
	if (bits && (acc & ((1u << bits) - 1)))
		return -1;
	return o;
}

static int bad(char *errmsg, size_t errsz, const char *msg)
{
	snprintf(errmsg, errsz, "%s", msg);
	return -1;
}

static bool get_dim(yajl_val v, const char *key, int *out)
{
	long long n;
	if (!cm_json_get_int(v, key, &n) || n < 1 || n > 10000)
		return false;
	*out = (int)n;
	return true;
}

int ws_cmd_parse(const char *msg, size_t len, struct ws_cmd *cmd, char *errmsg, size_t errsz)
{
	memset(cmd, 0, sizeof *cmd);
	struct cm_error err;
	yajl_val v = cm_json_parse(msg, len, &err);
	if (!v && !strcmp(err.code, "JSON_TOO_DEEP")) {
		bad(errmsg, errsz, err.message);
		return WS_CMD_TOO_DEEP;
	}
	if (!v)
		return bad(errmsg, errsz, "frame is not valid JSON (expected {\"type\": ...})");
	int rc = -1;
	const char *type = YAJL_IS_OBJECT(v) ? cm_json_get_str(v, "type") : NULL;
	if (!type) {
		bad(errmsg, errsz, "frame must be a JSON object with a string \"type\"");
	} else if (!strcmp(type, "stdin")) {
		yajl_val d = cm_json_get(v, "data");
		const char *enc = cm_json_get_str(v, "encoding");
		yajl_val encv = cm_json_get(v, "encoding");
		if (!YAJL_IS_STRING(d)) {
			bad(errmsg, errsz, "stdin frame needs a string \"data\"");
		} else if (encv && !(enc && (!strcmp(enc, "utf8") || !strcmp(enc, "utf-8") || !strcmp(enc, "base64")))) {
			bad(errmsg, errsz, "\"encoding\" must be \"utf8\" or \"base64\"");
		} else {
			const char *s = YAJL_GET_STRING(d);
			size_t n = strlen(s);
			cmd->type = WS_CMD_STDIN;
			cmd->data = malloc(n + 1);
			if (!cmd->data) {
				bad(errmsg, errsz, "out of memory");
			} else if (enc && !strcmp(enc, "base64")) {
				long o = b64_decode(cmd->data, s, n);
				if (o < 0) {
					ws_cmd_free(cmd);
					bad(errmsg, errsz, "\"data\" is not valid base64");
				} else {
					cmd->len = (size_t)o;
					rc = 0;
				}
			} else {
				memcpy(cmd->data, s, n);
				cmd->len = n;
				rc = 0;
			}
		}
	} else if (!strcmp(type, "resize")) {
		cmd->type = WS_CMD_RESIZE;
		if (!get_dim(v, "cols", &cmd->cols) || !get_dim(v, "rows", &cmd->rows))
			bad(errmsg, errsz, "resize needs integer \"cols\" and \"rows\" from 1 to 10000");
		else
			rc = 0;
	} else if (!strcmp(type, "signal")) {
		cmd->type = WS_CMD_SIGNAL;
		const char *name = cm_json_get_str(v, "name");
		cmd->signo = name ? ws_signal_number(name) : 0;
		if (!cmd->signo) {
			bad(errmsg, errsz, "signal \"name\" must be one of INT, TERM, KILL, HUP, QUIT");
		} else {
			snprintf(cmd->signame, sizeof cmd->signame, "%s", !strncmp(name, "SIG", 3) ? name + 3 : name);
			rc = 0;
		}
	} else if (!strcmp(type, "eof")) {
		cmd->type = WS_CMD_EOF;
		rc = 0;
	} else if (!strcmp(type, "close")) {
		cmd->type = WS_CMD_CLOSE;
		rc = 0;
	} else {
		bad(errmsg, errsz, "unknown frame type (expected stdin, resize, signal, eof or close)");
	}
	yajl_tree_free(v);
	return rc;
}

/* Appends what g generated to out and frees g. */
static int finish(yajl_gen g, struct cm_buf *out)
{
	const unsigned char *buf;
	size_t blen;
	int rc = yajl_gen_get_buf(g, &buf, &blen) == yajl_gen_status_ok ? cm_buf_append(out, buf, blen) : -1;
	yajl_gen_free(g);
	return rc;
}

static int frame_one(struct cm_buf *out, const char *type, const unsigned char *data, size_t len, bool text)
{
	yajl_gen g = cm_jg_new();
	if (!g)
		return -1;
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "type", type);
	cm_jg_str(g, "data");
	if (text) {
		cm_jg_strn(g, (const char *)data, len);
	} else {
		size_t cap = 4 * ((len + 2) / 3) + 1;
		unsigned char *b = malloc(cap);
		if (!b) {
			yajl_gen_free(g);
			return -1;
		}
		int n = EVP_EncodeBlock(b, data, (int)len);
		cm_jg_strn(g, (const char *)b, (size_t)n);
		free(b);
	}
	cm_jg_kv_str(g, "encoding", text ? "utf8" : "base64");
	yajl_gen_map_close(g);
	return finish(g, out);
}

size_t ws_utf8_valid_prefix(const unsigned char *data, size_t len)
{
	size_t lo = 0;
	while (lo < len) {
		unsigned char c = data[lo];
		size_t n = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
		if (!n || lo + n > len || !cm_valid_utf8((const char *)data + lo, n))
			break;
		lo += n;
	}
	return lo;
}

int ws_frame_data(struct cm_buf *out, const char *type, const unsigned char *data, size_t len)
{
	return frame_one(out, type, data, len, cm_valid_utf8((const char *)data, len));
}

int ws_frame_exit(struct cm_buf *out, int code)
{
	return cm_buf_printf(out, "{\"type\":\"exit\",\"code\":%d}", code);
}

int ws_frame_error(struct cm_buf *out, const char *code, const char *message)
{
	yajl_gen g = cm_jg_new();
	if (!g)
		return -1;
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "type", "error");
	cm_jg_str(g, "error");
	yajl_gen_map_open(g);
	cm_jg_kv_str(g, "code", code);
	cm_jg_kv_str(g, "message", cm_valid_utf8(message, strlen(message)) ? message : "error");
	yajl_gen_map_close(g);
	yajl_gen_map_close(g);
	return finish(g, out);
}

size_t ws_utf8_boundary(const unsigned char *buf, size_t len)
{
	/* find the lead byte of the last sequence (at most 3 continuation bytes back) */
	size_t i = len, cont = 0;
	while (i > 0 && cont < 3 && (buf[i - 1] & 0xC0) == 0x80) {
		i--;
		cont++;
	}
	if (i == 0)
		return len;
	unsigned char lead = buf[i - 1];
	size_t need;
	if (lead >= 0xC2 && lead <= 0xDF)
		need = 1;
	else if (lead >= 0xE0 && lead <= 0xEF)
		need = 2;
	else if (lead >= 0xF0 && lead <= 0xF4)
		need = 3;
	else
		return len; /* ASCII or a byte that can never start a sequence */
	if (cont >= need)
		return len; /* complete (or over-long: invalid whatever comes next) */
	/* the second byte's range depends on the lead (no overlongs, surrogates, > U+10FFFF) */
	if (cont >= 1) {
		unsigned char b = buf[i];
		if ((lead == 0xE0 && b < 0xA0) || (lead == 0xED && b > 0x9F) || (lead == 0xF0 && b < 0x90) ||
		    (lead == 0xF4 && b > 0x8F))
			return len;
	}
	return i - 1;
}

int ws_demux_feed(struct ws_demux *d, const unsigned char *buf, size_t len,
		  int (*cb)(int stream, const unsigned char *data, size_t n, void *ud), void *ud)
{
	size_t i = 0;
	while (i < len) {
		if (d->left == 0) {
			while (d->have < 8 && i < len)
				d->hdr[d->have++] = buf[i++];
			if (d->have < 8)
				return 0;
			d->have = 0;
			if (d->hdr[0] > 2 || d->hdr[1] || d->hdr[2] || d->hdr[3])
				return -1;
			d->stream = d->hdr[0] == 2 ? 2 : 1;
			d->left = (uint32_t)d->hdr[4] << 24 | (uint32_t)d->hdr[5] << 16 | (uint32_t)d->hdr[6] << 8 | d->hdr[7];
			continue;
		}
		size_t n = len - i < d->left ? len - i : d->left;
		d->left -= (uint32_t)n;
		int rc = cb(d->stream, buf + i, n, ud);
		if (rc)
			return rc;
		i += n;
	}
	return 0;
}
