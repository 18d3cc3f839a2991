/* t_origin.c: the Host and Origin checks of lib/origin.c and their settings' parsers. */
#include "config.h"
#include "cm.h"
#include "cm_config.h"
#include "origin.h"
#include "tap.h"

#include <string.h>
#include <unistd.h>

static struct cm_config cfg;

/* Runs the checks on one request; returns the status (0 = allowed) and the code. */
static int check(const char *method, const char *path, const char *host, const char *scheme, const char *origin,
		 const char *site, bool upgrade, char code[48])
{
	struct cm_site_req q = {.method = method, .path = path, .host = host, .scheme = scheme, .origin = origin,
				.fetch_site = site, .upgrade = upgrade, .server_name = "_"};
	struct cm_error err = {0};
	code[0] = '\0';
	if (cm_site_check(&cfg, &q, CM_CHECK_HOST | CM_CHECK_ORIGIN, &err) == 0)
		return 0;
	snprintf(code, 48, "%s", err.code);
	return err.status;
}

int main(void)
{
	char code[48];
	snprintf(cfg.http_listen, sizeof cfg.http_listen, "127.0.0.1:4545");
	snprintf(cfg.https_listen, sizeof cfg.https_listen, "0.0.0.0:8443");
	snprintf(cfg.apps_listen, sizeof cfg.apps_listen, "127.0.0.1:4546,https://0.0.0.0:8444");
	snprintf(cfg.allowed_origins, sizeof cfg.allowed_origins, "https://console.example.org, http://[::1]:9000");
	snprintf(cfg.allowed_hosts, sizeof cfg.allowed_hosts, "cm.example.org,*.lan.example.org");

	/* origins */
	struct cm_origin o;
	ok(cm_origin_parse("https://Example.ORG", &o) == 0 && !strcmp(o.host, "example.org") && o.port == 443,
	   "origin: host lowercased, default https port");
	ok(cm_origin_parse("http://[::1]:8080", &o) == 0 && !strcmp(o.host, "::1") && o.port == 8080, "origin: IPv6 with port");
	ok(cm_origin_parse("null", &o) < 0, "origin: null is not an origin");
	ok(cm_origin_parse("ftp://x.org", &o) < 0, "origin: other schemes refused");
	ok(cm_origin_parse("https://x.org/path", &o) < 0, "origin: a path is not an origin");
	ok(cm_origin_parse("https://u@x.org", &o) < 0, "origin: userinfo refused");
	ok(cm_origin_parse("https://x.org:99999", &o) < 0, "origin: port out of range");
	ok(cm_origin_parse("https://x.org:", &o) < 0, "origin: empty port");
	ok(cm_origin_parse("https://x y.org", &o) < 0, "origin: space refused");

	/* Host */
	ok(check("GET", "/", "127.0.0.1:4545", "http", NULL, NULL, false, code) == 0, "host: 127.0.0.1 with port");
	ok(check("GET", "/", "localhost", "http", NULL, NULL, false, code) == 0, "host: localhost");
	ok(check("GET", "/", "[::1]:4545", "http", NULL, NULL, false, code) == 0, "host: [::1]");
	ok(check("GET", "/", "10.1.2.3:8443", "https", NULL, NULL, false, code) == 0, "host: any IP literal (no rebinding without a name)");
	ok(check("GET", "/", "CM.example.org:8443", "https", NULL, NULL, false, code) == 0, "host: ALLOWED_HOSTS, any case");
	ok(check("GET", "/", "cm.example.org.", "https", NULL, NULL, false, code) == 0, "host: trailing dot");
	ok(check("GET", "/", "a.lan.example.org", "https", NULL, NULL, false, code) == 0, "host: *.suffix");
	ok(check("GET", "/", "lan.example.org", "https", NULL, NULL, false, code) == 421, "host: *.suffix is not the bare suffix");
	ok(check("GET", "/", "evil.example:4545", "http", NULL, NULL, false, code) == 421 &&
	   !strcmp(code, "MISDIRECTED_REQUEST"), "host: another name is 421 MISDIRECTED_REQUEST");
	ok(check("GET", "/", "127.0.0.1.nip.io", "http", NULL, NULL, false, code) == 421, "host: a name that looks like an IP");
	ok(check("GET", "/", "localhost.evil.example", "http", NULL, NULL, false, code) == 421, "host: localhost. prefix");
	ok(check("GET", "/", "[::1", "http", NULL, NULL, false, code) == 421, "host: malformed IPv6");
	ok(check("GET", "/", "a b", "http", NULL, NULL, false, code) == 421, "host: malformed");
	ok(check("GET", "/", "", "http", NULL, NULL, false, code) == 0, "host: none (HTTP/1.0) is not a browser's");
	{
		struct cm_site_req q = {.method = "GET", .path = "/", .host = "cm.site.example", .server_name = "cm.site.example"};
		struct cm_error err = {0};
		ok(cm_site_check(&cfg, &q, CM_CHECK_HOST, &err) == 0, "host: nginx's server_name");
	}

	/* Origin on state changes */
	ok(check("POST", "/containers", "127.0.0.1:4545", "http", NULL, NULL, false, code) == 0, "no Origin: allowed (curl)");
	ok(check("POST", "/containers", "127.0.0.1:4545", "http", "https://evil.example", "cross-site", false, code) == 403 &&
	   !strcmp(code, "CROSS_ORIGIN_REFUSED"), "foreign Origin on POST: 403 CROSS_ORIGIN_REFUSED");
	ok(check("DELETE", "/containers/x", "127.0.0.1:4545", "http", "null", NULL, false, code) == 403, "Origin: null refused");
	ok(check("POST", "/x", "127.0.0.1:4545", "http", NULL, "cross-site", false, code) == 403,
	   "Sec-Fetch-Site: cross-site without Origin refused");
	ok(check("POST", "/x", "127.0.0.1:4545", "http", NULL, "same-site", false, code) == 0, "Sec-Fetch-Site: same-site allowed");
	ok(check("POST", "/x", "127.0.0.1:4545", "http", "http://127.0.0.1:4545", "same-origin", false, code) == 0,
	   "the request's own origin");
	ok(check("POST", "/x", "cm.example.org:8443", "https", "https://cm.example.org:8443", NULL, false, code) == 0,
	   "own origin by an ALLOWED_HOSTS name");
	ok(check("POST", "/x", "127.0.0.1:4545", "http", "https://localhost:8443", NULL, false, code) == 0,
	   "the other API listener's origin");
	ok(check("POST", "/x", "127.0.0.1:4545", "http", "https://evil.example:8443", NULL, false, code) == 403,
	   "an API listener's port under a foreign name");
	/* a page served from any other address on an API listener's port number is another site */
	ok(check("POST", "/x", "cm.example.org:8443", "https", "http://203.0.113.5:4545", NULL, false, code) == 403 &&
	   check("POST", "/x", "cm.example.org:8443", "https", "https://203.0.113.5:8443", NULL, false, code) == 403 &&
	   check("POST", "/x", "127.0.0.1:4545", "http", "http://[2001:db8::1]:4545", NULL, false, code) == 403,
	   "an API listener's port under another IP address: 403");
	ok(check("POST", "/x", "203.0.113.5:8443", "https", "https://203.0.113.5:8443", NULL, false, code) == 0,
	   "an IP address the request itself was sent to is its own origin");
	char me[256];
	if (gethostname(me, sizeof me) == 0) {
		char host[300], origin[300];
		snprintf(host, sizeof host, "%s:8443", me);
		snprintf(origin, sizeof origin, "https://%s:8443", me);
		ok(check("POST", "/x", host, "https", origin, NULL, false, code) == 0, "the machine's own name needs no setting (%s)", me);
	}
	ok(check("POST", "/x", "127.0.0.1:4545", "http", "http://127.0.0.1:4545", NULL, false, code) == 0 &&
	   check("POST", "/x", "127.0.0.1:4545", "https", "http://127.0.0.1:4545", NULL, false, code) == 0,
	   "the HTTP listener's origin");
	ok(check("POST", "/x", "10.0.0.1:8443", "https", "http://10.0.0.1:8443", NULL, false, code) == 403,
	   "scheme differs from the request's and the listener's");
	ok(check("POST", "/x", "127.0.0.1:4545", "http", "https://console.example.org", "cross-site", false, code) == 0,
	   "ALLOWED_ORIGINS");
	ok(check("POST", "/x", "127.0.0.1:4545", "http", "https://console.example.org:444", NULL, false, code) == 403,
	   "ALLOWED_ORIGINS: the port counts");
	ok(check("PUT", "/x", "127.0.0.1:4545", "http", "http://[::1]:9000", NULL, false, code) == 0, "ALLOWED_ORIGINS: IPv6");
	ok(check("GET", "/containers", "127.0.0.1:4545", "http", "https://evil.example", "cross-site", false, code) == 0,
	   "a cross-site GET is answered (no state changes; no CORS headers)");
	ok(check("HEAD", "/", "127.0.0.1:4545", "http", "https://evil.example", NULL, false, code) == 0, "HEAD too");
	ok(check("GET", "/shutdown", "127.0.0.1:4545", "http", "https://evil.example", NULL, false, code) == 403,
	   "GET /shutdown changes state");
	ok(check("GET", "/ws/c1", "127.0.0.1:4545", "http", "https://evil.example", NULL, true, code) == 403,
	   "a WebSocket upgrade from a foreign Origin");
	ok(check("GET", "/ws/c1", "127.0.0.1:4545", "http", "http://127.0.0.1:4545", NULL, true, code) == 0,
	   "a WebSocket upgrade from its own origin");

	/* apps' origins: every request, reads too, even when listed */
	ok(check("GET", "/containers", "127.0.0.1:4545", "http", "http://127.0.0.1:4546", "same-site", false, code) == 403,
	   "GET from the apps listener's origin");
	ok(check("GET", "/containers", "127.0.0.1:4545", "http", "http://localhost:4546", NULL, false, code) == 403,
	   "GET from the apps origin by another loopback name");
	ok(check("POST", "/x", "cm.example.org:8443", "https", "https://cm.example.org:8444", NULL, false, code) == 403,
	   "POST from the TLS apps origin");
	ok(check("GET", "/x", "127.0.0.1:4545", "http", "http://evil.example:4546", NULL, false, code) == 0,
	   "a foreign name on the apps port is just a foreign origin (GET allowed)");

	/* settings */
	char bad[64];
	ok(cm_allowed_origins_valid("https://a.example, http://b.example:8080", bad, sizeof bad) == 0, "ALLOWED_ORIGINS valid");
	ok(cm_allowed_origins_valid("a.example", bad, sizeof bad) < 0 && !strcmp(bad, "a.example"), "ALLOWED_ORIGINS: no scheme");
	ok(cm_allowed_origins_valid("*", bad, sizeof bad) < 0, "ALLOWED_ORIGINS: no wildcard");
	ok(cm_allowed_hosts_valid("a.example,*.b.example,.c.example,*", bad, sizeof bad) == 0, "ALLOWED_HOSTS valid");
	ok(cm_allowed_hosts_valid("a.example:80", bad, sizeof bad) < 0, "ALLOWED_HOSTS: no port");
	ok(cm_allowed_hosts_valid("https://a.example", bad, sizeof bad) < 0, "ALLOWED_HOSTS: no scheme");
	struct cm_origin apps[CM_APPS_LISTENERS];
	char why[160];
	ok(cm_apps_listen_parse("off", apps, why, sizeof why) == 0, "APPS_LISTEN off");
	ok(cm_apps_listen_parse("127.0.0.1:4546,https://0.0.0.0:8444", apps, why, sizeof why) == 2 &&
	   !strcmp(apps[0].scheme, "http") && apps[0].port == 4546 && !strcmp(apps[1].scheme, "https") && apps[1].port == 8444,
	   "APPS_LISTEN: two listeners");
	ok(cm_apps_listen_parse("0.0.0.0:4546", apps, why, sizeof why) < 0, "APPS_LISTEN: plain HTTP off loopback refused");
	ok(cm_apps_listen_parse("a:1,b:2,c:3", apps, why, sizeof why) < 0, "APPS_LISTEN: at most two");
	ok(cm_apps_listen_parse("127.0.0.1", apps, why, sizeof why) < 0, "APPS_LISTEN: a port is needed");
	/* media type */
	ok(cm_json_media_type("application/json"), "media type: application/json");
	ok(cm_json_media_type("Application/JSON; charset=UTF-8"), "media type: any case, charset");
	ok(cm_json_media_type("application/json;charset=\"utf-8\""), "media type: quoted charset, no space");
	ok(!cm_json_media_type(NULL) && !cm_json_media_type(""), "media type: none");
	ok(!cm_json_media_type("text/plain"), "media type: text/plain");
	ok(!cm_json_media_type("application/x-www-form-urlencoded"), "media type: a form");
	ok(!cm_json_media_type("multipart/form-data; boundary=x"), "media type: multipart");
	ok(!cm_json_media_type("application/jsonp"), "media type: a longer name");
	ok(!cm_json_media_type("application/json; boundary=x"), "media type: another parameter");
	ok(!cm_json_media_type("application/json x"), "media type: trailing junk");
	ok(!cm_json_media_type("text/plain; x=application/json"), "media type: json in a parameter");
	return tap_done();
}
