/* t_frames.c: the WebSocket session protocol: client frames, output frames, UTF-8 boundaries
 * and Docker's multiplexed stream. */
#include "config.h"
#include "frames.h"
#include "json.h"
#include "tap.h"

#include <signal.h>

static int parse(const char *s, struct ws_cmd *c)
{
	char why[200];
	return ws_cmd_parse(s, strlen(s), c, why, sizeof why);
}

struct collected {
	char out[256];
	size_t n;
	int streams[16];
	int pieces;
};

static int collect(int stream, const unsigned char *data, size_t n, void *ud)
{
	struct collected *c = ud;
	memcpy(c->out + c->n, data, n);
	c->n += n;
	if (c->pieces < 16)
		c->streams[c->pieces++] = stream;
	return 0;
}

int main(void)
{
	struct ws_cmd c;
	ok(parse("{\"type\":\"stdin\",\"data\":\"ls\\n\",\"encoding\":\"utf8\"}", &c) == 0 && c.type == WS_CMD_STDIN &&
		   c.len == 3 && !memcmp(c.data, "ls\n", 3),
	   "stdin utf8");
	ws_cmd_free(&c);
	ok(parse("{\"type\":\"stdin\",\"data\":\"aGk=\"}", &c) == 0 && c.len == 4, "encoding defaults to utf8");
	ws_cmd_free(&c);
	ok(parse("{\"type\":\"stdin\",\"data\":\"/w==\",\"encoding\":\"base64\"}", &c) == 0 && c.len == 1 &&
		   c.data[0] == 0xff,
	   "stdin base64");
	ws_cmd_free(&c);
	ok(parse("{\"type\":\"stdin\",\"data\":\"/w\",\"encoding\":\"base64\"}", &c) == 0 && c.len == 1,
	   "base64 without padding");
	ws_cmd_free(&c);
	ok(parse("{\"type\":\"stdin\",\"data\":\"@@@@\",\"encoding\":\"base64\"}", &c) < 0, "bad base64 refused");
	ok(parse("{\"type\":\"stdin\",\"data\":\"/x==\",\"encoding\":\"base64\"}", &c) < 0, "non-canonical base64 refused");
	ok(parse("{\"type\":\"stdin\",\"data\":\"a\",\"encoding\":\"rot13\"}", &c) < 0, "unknown encoding refused");
	ok(parse("{\"type\":\"stdin\"}", &c) < 0, "stdin without data refused");
	ok(parse("{\"type\":\"stdin\",\"data\":5}", &c) < 0, "stdin with a number refused");
	ok(parse("{\"type\":\"resize\",\"cols\":100,\"rows\":40}", &c) == 0 && c.cols == 100 && c.rows == 40, "resize");
	ok(parse("{\"type\":\"resize\",\"cols\":-1,\"rows\":40}", &c) < 0, "negative cols refused");
	ok(parse("{\"type\":\"resize\",\"cols\":\"80\",\"rows\":40}", &c) < 0, "string cols refused");
	ok(parse("{\"type\":\"signal\",\"name\":\"INT\"}", &c) == 0 && c.signo == SIGINT, "signal INT");
	ok(parse("{\"type\":\"signal\",\"name\":\"SIGKILL\"}", &c) == 0 && c.signo == SIGKILL && !strcmp(c.signame, "KILL"),
	   "signal SIGKILL");
	ok(parse("{\"type\":\"signal\",\"name\":\"STOP\"}", &c) < 0, "signal outside the list refused");
	ok(parse("{\"type\":\"eof\"}", &c) == 0 && c.type == WS_CMD_EOF, "eof");
	ok(parse("{\"type\":\"close\"}", &c) == 0 && c.type == WS_CMD_CLOSE, "close");
	ok(parse("{\"type\":\"nope\"}", &c) < 0, "unknown type refused");
	ok(parse("[1]", &c) < 0, "array refused");
	ok(parse("not json", &c) < 0, "not JSON refused");
	ok(parse("{\"type\":\"close\",\"type\":\"eof\"}", &c) < 0, "duplicate key refused");

	struct cm_buf b = {0};
	ws_frame_data(&b, "stdout", (const unsigned char *)"h\xc3\xa9\n", 4);
	is_str(cm_buf_str(&b), "{\"type\":\"stdout\",\"data\":\"h\xc3\xa9\\n\",\"encoding\":\"utf8\"}", "utf8 frame");
	cm_buf_free(&b);
	ws_frame_data(&b, "stderr", (const unsigned char *)"\xff\xfe" "abc", 5);
	is_str(cm_buf_str(&b), "{\"type\":\"stderr\",\"data\":\"//5hYmM=\",\"encoding\":\"base64\"}", "base64 frame");
	cm_buf_free(&b);
	ws_frame_exit(&b, 130);
	is_str(cm_buf_str(&b), "{\"type\":\"exit\",\"code\":130}", "exit frame");
	cm_buf_free(&b);
	ws_frame_error(&b, "BAD_FRAME", "bad \"x\"");
	is_str(cm_buf_str(&b), "{\"type\":\"error\",\"error\":{\"code\":\"BAD_FRAME\",\"message\":\"bad \\\"x\\\"\"}}",
	       "error frame");
	cm_buf_free(&b);

	const unsigned char e_acute[] = {'a', 0xc3, 0xa9};
	ok(ws_utf8_boundary(e_acute, 3) == 3, "complete 2-byte sequence kept");
	ok(ws_utf8_boundary(e_acute, 2) == 1, "half a 2-byte sequence held back");
	const unsigned char euro[] = {0xe2, 0x82, 0xac};
	ok(ws_utf8_boundary(euro, 1) == 0 && ws_utf8_boundary(euro, 2) == 0 && ws_utf8_boundary(euro, 3) == 3,
	   "3-byte sequence held back until complete");
	const unsigned char emoji[] = {'x', 0xf0, 0x9f, 0x98, 0x80};
	ok(ws_utf8_boundary(emoji, 4) == 1 && ws_utf8_boundary(emoji, 5) == 5, "4-byte sequence");
	const unsigned char junk[] = {'x', 0xff};
	ok(ws_utf8_boundary(junk, 2) == 2, "a byte that never starts a sequence is not held");
	const unsigned char surrogate[] = {0xed, 0xa0};
	ok(ws_utf8_boundary(surrogate, 2) == 2, "surrogate prefix is not held");
	const unsigned char cont[] = {0x80, 0x80, 0x80, 0x80};
	ok(ws_utf8_boundary(cont, 4) == 4, "stray continuation bytes are not held");

	/* every split of a UTF-8 text gives valid pieces that join back to the text */
	const char *text = "\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80!";
	size_t tl = strlen(text);
	int good = 1;
	for (size_t cut = 0; cut <= tl; cut++) {
		size_t b1 = ws_utf8_boundary((const unsigned char *)text, cut);
		good &= cm_valid_utf8(text, b1) && b1 <= cut && cut - b1 <= 3;
	}
	ok(good, "all %zu cut points give valid UTF-8 prefixes", tl + 1);

	const unsigned char mixed[] = {'o', 'k', 0xc3, 0xa9, 0xff, 'z'};
	ok(ws_utf8_valid_prefix(mixed, sizeof mixed) == 4, "valid prefix stops at the bad byte");
	ok(ws_utf8_valid_prefix(mixed, 3) == 2, "valid prefix holds whole characters only");

	struct ws_demux d = {0};
	struct collected col = {0};
	const unsigned char mux[] = {1, 0, 0, 0, 0, 0, 0, 3, 'o', 'u', 't', 2, 0, 0, 0, 0, 0, 0, 2, 'e', 'r'};
	for (size_t i = 0; i < sizeof mux; i++) /* byte by byte: headers split anywhere */
		ws_demux_feed(&d, mux + i, 1, collect, &col);
	ok(col.n == 5 && !memcmp(col.out, "outer", 5) && col.streams[0] == 1 && col.streams[col.pieces - 1] == 2,
	   "demux byte by byte");
	struct ws_demux d2 = {0};
	struct collected col2 = {0};
	ok(ws_demux_feed(&d2, mux, sizeof mux, collect, &col2) == 0 && col2.n == 5 && col2.pieces == 2, "demux at once");
	const unsigned char badmux[] = {7, 0, 0, 0, 0, 0, 0, 1, 'x'};
	struct ws_demux d3 = {0};
	ok(ws_demux_feed(&d3, badmux, sizeof badmux, collect, &col2) < 0, "unknown stream type refused");
	/* a deep frame (300 KB of nesting crashed cm-ws in yajl_tree_free): its own code, no crash */
	{
		size_t n = 150000;
		char *deep = malloc(2 * n + 40);
		if (!deep)
			return 1;
		size_t k = (size_t)snprintf(deep, 40, "{\"type\":\"stdin\",\"data\":");
		memset(deep + k, '[', n);
		memset(deep + k + n, ']', n);
		deep[k + 2 * n] = '}';
		deep[k + 2 * n + 1] = '\0';
		char why[200] = "";
		ok(ws_cmd_parse(deep, strlen(deep), &c, why, sizeof why) == WS_CMD_TOO_DEEP && strstr(why, "deeper"),
		   "a frame nesting 150,000 arrays -> WS_CMD_TOO_DEEP (%s)", why);
		free(deep);
	}
	return tap_done();
}
