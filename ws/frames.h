/* frames.h: the WebSocket session protocol, independent of the event loop (unit-tested and
 * fuzzed on its own): client frames in, stdout/stderr/exit/error frames out, Docker's
 * multiplexed stream headers, and UTF-8 boundaries. */
#ifndef CM_WS_FRAMES_H
#define CM_WS_FRAMES_H

#include <stddef.h>
#include <stdint.h>
#include "cm.h"

/* ---- client → server ---- */
enum ws_cmd_type { WS_CMD_STDIN, WS_CMD_RESIZE, WS_CMD_SIGNAL, WS_CMD_EOF, WS_CMD_CLOSE };

struct ws_cmd {
	enum ws_cmd_type type;
	unsigned char *data; /* stdin bytes (malloc'd; free with ws_cmd_free) */
	size_t len;
	int cols, rows; /* resize */
	int signo;      /* signal */
	char signame[8];
};

/* Parses one client text message. On failure returns -1 (error frame BAD_FRAME) or
 * WS_CMD_TOO_DEEP (error frame JSON_TOO_DEEP: nesting over CM_JSON_MAX_DEPTH, refused before any
 * tree is built) with a message for the error frame (the session goes on either way). */
#define WS_CMD_TOO_DEEP (-2)
int ws_cmd_parse(const char *msg, size_t len, struct ws_cmd *cmd, char *errmsg, size_t errsz);
void ws_cmd_free(struct ws_cmd *cmd);
/* "INT", "SIGINT", ... → signal number, or 0 when not one of the allowed names. */
int ws_signal_number(const char *name);

/* ---- server → client ---- */
/* Appends {"type":type,"data":...,"encoding":"utf8"|"base64"} to out: utf8 when data is
 * valid UTF-8, base64 otherwise. */
int ws_frame_data(struct cm_buf *out, const char *type, const unsigned char *data, size_t len);
int ws_frame_exit(struct cm_buf *out, int code);
int ws_frame_error(struct cm_buf *out, const char *code, const char *message);

/* The length of the longest prefix of buf that does not end inside a UTF-8 sequence that
 * more bytes could still complete (at most 3 bytes are held back; bytes that can never be
 * valid are not). */
size_t ws_utf8_boundary(const unsigned char *buf, size_t len);

/* The longest prefix of buf that is valid UTF-8 (whole characters only). */
size_t ws_utf8_valid_prefix(const unsigned char *buf, size_t len);

/* ---- Docker's multiplexed stream (exec and logs without a TTY) ----
 * Each frame: 1 byte stream (0 stdin, 1 stdout, 2 stderr), 3 zero bytes, 4 bytes big-endian
 * length, then that many bytes. */
struct ws_demux {
	unsigned char hdr[8];
	int have;      /* header bytes collected */
	uint32_t left; /* payload bytes still to come for the current frame */
	int stream;    /* 1 stdout, 2 stderr */
};
/* Feeds bytes; cb receives each payload piece with its stream. Returns -1 on a malformed
 * header (unknown stream type), else the cb's first non-zero return or 0. */
int ws_demux_feed(struct ws_demux *d, const unsigned char *buf, size_t len,
		  int (*cb)(int stream, const unsigned char *data, size_t n, void *ud), void *ud);

#endif
