/* t_util.c: sizes, ids, UTF-8, base64url, time, listen specs, rm -rf, Docker request URLs. */
#include "config.h"
#include "cm.h"
#include "docker.h"
#include "tap.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int size_is(const char *s, int64_t want)
{
	int64_t v = -1;
	return cm_parse_size(s, &v) == 0 && v == want;
}

int main(void)
{
	ok(size_is("4096m", 4096LL << 20), "4096m");
	ok(size_is("1g", 1LL << 30), "1g");
	ok(size_is("1G", 1LL << 30), "1G");
	ok(size_is("512k", 512LL << 10), "512k");
	ok(size_is("100", 100), "plain bytes");
	ok(size_is("64mb", 64LL << 20), "trailing b");
	int64_t v;
	ok(cm_parse_size("12xb", &v) < 0, "12xb rejected");
	ok(cm_parse_size("", &v) < 0, "empty rejected");
	ok(cm_parse_size("-5m", &v) < 0, "negative rejected");
	ok(cm_parse_size("1.5g", &v) < 0, "fraction rejected");
	ok(cm_parse_size("99999999999999999999", &v) < 0, "overflow rejected");
	ok(cm_parse_size("9999999999t", &v) < 0, "unit overflow rejected");

	char cuid[38];
	ok(cm_new_cuid(cuid) == 0 && cm_valid_cuid(cuid), "new cuid is valid: %s", cuid);
	char other[38];
	cm_new_cuid(other);
	ok(strcmp(cuid, other) != 0, "two cuids differ");
	ok(!cm_valid_cuid("c123"), "short cuid invalid");
	ok(!cm_valid_cuid("x123e4567-e89b-12d3-a456-426614174000"), "wrong prefix invalid");
	ok(!cm_valid_cuid("c123E4567-e89b-12d3-a456-426614174000"), "upper case invalid");
	ok(cm_valid_cuid("c123e4567-e89b-12d3-a456-426614174000"), "seed cuid valid");
	ok(!cm_valid_cuid("c123e4567-e89b-12d3-a456-4266141740/0"), "slash invalid");

	ok(cm_valid_utf8("héllo", strlen("héllo")), "utf-8 ok");
	ok(!cm_valid_utf8("\xff", 1), "0xff invalid");
	ok(!cm_valid_utf8("\xc3", 1), "truncated sequence invalid");
	ok(!cm_valid_utf8("\xc0\xaf", 2), "overlong invalid");
	ok(!cm_valid_utf8("\xed\xa0\x80", 3), "surrogate invalid");
	ok(cm_valid_utf8("\xf0\x9f\x98\x80", 4), "4-byte emoji ok");

	unsigned char raw[36], back[40];
	for (int i = 0; i < 36; i++)
		raw[i] = (unsigned char)(i * 7 + 3);
	char enc[64];
	cm_b64url_encode(enc, raw, sizeof raw);
	ok(strlen(enc) == 48 && !strpbrk(enc, "+/="), "base64url is url-safe: %s", enc);
	ok(cm_b64url_decode(back, sizeof back, enc) == 36 && !memcmp(raw, back, 36), "base64url round trip");
	ok(cm_b64url_decode(back, sizeof back, "ab$d") < 0, "bad base64url rejected");

	char ts[32];
	cm_time_rfc3339(ts, 1705764600123LL);
	is_str(ts, "2024-01-20T15:30:00.123Z", "rfc3339 formatting");
	ok(cm_parse_docker_time("2024-01-20T15:30:00.123456789Z") == 1705764600123LL, "docker time parse");
	ok(cm_parse_docker_time("0001-01-01T00:00:00Z") == 0, "docker zero time");

	char host[64];
	int port;
	ok(cm_parse_listen("127.0.0.1:8080", host, sizeof host, &port) == 0 && port == 8080 && !strcmp(host, "127.0.0.1"),
	   "listen spec");
	ok(cm_parse_listen("8443", host, sizeof host, &port) == 0 && !strcmp(host, "0.0.0.0"), "port only");
	ok(cm_parse_listen("[::1]:80", host, sizeof host, &port) == 0 && !strcmp(host, "::1"), "ipv6");
	ok(cm_parse_listen("1.2.3.4:99999", host, sizeof host, &port) < 0, "bad port");
	ok(cm_is_loopback_host("127.0.0.5") && cm_is_loopback_host("::1") && !cm_is_loopback_host("0.0.0.0"),
	   "loopback detection");

	char dir[] = "/tmp/cm-unit-XXXXXX";
	ok(mkdtemp(dir) != NULL, "temp dir");
	char p[256], outside[] = "/tmp/cm-unit-out-XXXXXX";
	ok(mkdtemp(outside) != NULL, "outside dir");
	snprintf(p, sizeof p, "%s/a/b/c", dir);
	ok(cm_mkdir_p(p, 0755) == 0, "mkdir -p");
	snprintf(p, sizeof p, "%s/keep", outside);
	FILE *f = fopen(p, "w");
	fputs("x", f);
	fclose(f);
	snprintf(p, sizeof p, "%s/a/link", dir);
	ok(symlink(outside, p) == 0, "symlink to outside");
	ok(cm_rm_rf(dir) == 0, "rm -rf");
	struct stat st;
	ok(stat(dir, &st) < 0, "tree gone");
	snprintf(p, sizeof p, "%s/keep", outside);
	ok(stat(p, &st) == 0, "rm -rf did not follow the symlink");
	cm_rm_rf(outside);
	ok(cm_rm_rf("/tmp/cm-unit-does-not-exist") == 0, "missing path is fine");
	/* Docker request URLs are never cut short (a 2048-byte buffer made Docker act on a shorter path) */
	{
		struct cm_docker d;
		struct cm_error derr;
		ok(cm_docker_init(&d, "unix:///var/run/docker.sock", &derr) == 0, "docker client init");
		for (size_t len = 100; len <= 100000; len *= 10) {
			char *path = malloc(len + 1);
			if (!path)
				return 1;
			memset(path, 'a', len);
			memcpy(path, "/containers/x/archive?path=", 27);
			path[len - 1] = 'Z';
			path[len] = '\0';
			char *url = cm_docker_url(&d, path);
			size_t bl = strlen("http://localhost" CM_DOCKER_API);
			ok(url && strlen(url) == bl + len && !strncmp(url, "http://localhost" CM_DOCKER_API, bl) &&
				   !strcmp(url + bl, path),
			   "a %zu-byte Docker path gives the whole URL (%zu bytes)", len, url ? strlen(url) : 0);
			free(url);
			free(path);
		}
		cm_docker_free(&d);
	}
	return tap_done();
}
