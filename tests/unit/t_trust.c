/* t_trust.c: the proxy secret (fresh at each make, 0600, checked in full) and the reading of
 * nginx `listen` directives behind the CM_AUTH=off guard, the packaged site's template
 * included. */
#include "config.h"
#include "cm.h"
#include "trust.h"
#include "cm_config.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int loopback(const char *conf, char *bad, size_t badsz)
{
	return cm_nginx_listeners_loopback(conf, bad, badsz);
}

static void secret_tests(void)
{
	char dir[] = "/tmp/t_trust.XXXXXX";
	ok(mkdtemp(dir) != NULL, "temp dir");
	struct cm_error err = {0};
	char a[CM_PROXY_SECRET_HEX + 1], b[CM_PROXY_SECRET_HEX + 1];
	ok(cm_proxy_secret_load(dir, a, &err) < 0, "no secret before it is made: %s", err.message);
	ok(cm_proxy_secret_make(dir, &err) == 0, "make a secret");
	ok(cm_proxy_secret_load(dir, a, &err) == 0 && strlen(a) == CM_PROXY_SECRET_HEX, "load it: 64 hex characters");
	ok(cm_proxy_secret_make(dir, &err) == 0 && cm_proxy_secret_load(dir, b, &err) == 0, "make another");
	ok(strcmp(a, b) != 0, "each start gets a new secret");
	char path[512];
	struct stat st;
	snprintf(path, sizeof path, "%s/%s", dir, CM_PROXY_SECRET_FILE);
	ok(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "%s is 0600", CM_PROXY_SECRET_FILE);
	snprintf(path, sizeof path, "%s/%s", dir, CM_PROXY_SECRET_CONF);
	ok(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "%s is 0600", CM_PROXY_SECRET_CONF);
	char *conf = cm_read_file(path, 4096, NULL);
	ok(conf && strstr(conf, "proxy_set_header X-CM-Proxy-Secret \"") && strstr(conf, b), "the include sends the secret");
	ok(conf && cm_nginx_listeners_loopback(conf, path, sizeof path) == 1, "the include is valid nginx syntax");
	free(conf);

	ok(cm_proxy_secret_ok(b, b), "the secret matches itself");
	ok(!cm_proxy_secret_ok(b, a), "another secret does not");
	ok(!cm_proxy_secret_ok(b, ""), "an empty header does not");
	char shorter[CM_PROXY_SECRET_HEX + 1];
	snprintf(shorter, sizeof shorter, "%.*s", CM_PROXY_SECRET_HEX - 1, b);
	ok(!cm_proxy_secret_ok(b, shorter), "a prefix does not");
	char longer[CM_PROXY_SECRET_HEX + 3];
	snprintf(longer, sizeof longer, "%sx", b);
	ok(!cm_proxy_secret_ok(b, longer), "the secret with more after it does not");
	ok(!cm_proxy_secret_ok(b, NULL) && !cm_proxy_secret_ok(NULL, b), "NULL never matches");

	/* a malformed file is refused, not half-read */
	snprintf(path, sizeof path, "%s/%s", dir, CM_PROXY_SECRET_FILE);
	ok(cm_write_file_atomic(path, "short", 5, 0600) == 0 && cm_proxy_secret_load(dir, a, &err) < 0 && a[0] == '\0',
	   "a malformed secret file is refused");
	unlink(path);
	snprintf(path, sizeof path, "%s/%s", dir, CM_PROXY_SECRET_CONF);
	unlink(path);
	rmdir(dir);
}

static void listen_tests(void)
{
	char bad[128];
	static const struct {
		const char *conf;
		int want;
		const char *bad;
	} cases[] = {
		{"server { listen 127.0.0.1:8080; }", 1, ""},
		{"server { listen 127.0.0.2:80; listen [::1]:8443 ssl http2; listen localhost:81; }", 1, ""},
		{"server { listen unix:/run/x.sock; }", 1, ""},
		{"server { listen 443 ssl http2; }", 0, "443"},
		{"server { listen [::]:443 ssl; }", 0, "[::]:443"},
		{"server { listen 127.0.0.1:8080; listen 0.0.0.0:8443 ssl; }", 0, "0.0.0.0:8443"},
		{"server { listen *:80; }", 0, "*:80"},
		{"server { listen 192.168.1.10:443 ssl; }", 0, "192.168.1.10:443"},
		{"server { listen example.org:443; }", 0, "example.org:443"},
		{"server { listen 8080; }", 0, "8080"},
		{"server { server_name x; }", 0, "*:80 (a server block without listen)"},
		{"upstream u { server unix:/a.sock; server 10.0.0.1:80; } server { listen 127.0.0.1:1; }", 1, ""},
		{"# listen 0.0.0.0:443;\nserver { listen 127.0.0.1:1; } # listen 443;", 1, ""},
		{"server { listen \"127.0.0.1:8080\"; add_header X \"a; listen 443;\"; }", 1, ""},
		{"map $a $b { default \"listen 443\"; } server { listen 127.0.0.1:1; }", 1, ""},
		{"server { location / { return 200; } listen 127.0.0.1:8080; }", 1, ""},
		{"server { listen 127.0.0.1:8080;", -1, ""},
		{"server { listen \"127.0.0.1:8080; }", -1, ""},
		{"} server { listen 127.0.0.1:8080; }", -1, ""},
		{"", 1, ""},
	};
	for (size_t i = 0; i < CM_ARRAY_LEN(cases); i++) {
		int r = loopback(cases[i].conf, bad, sizeof bad);
		ok(r == cases[i].want && (r != 0 || !strcmp(bad, cases[i].bad)), "listeners of \"%s\": %d (%s)", cases[i].conf,
		   cases[i].want, cases[i].bad);
		if (r != cases[i].want || (r == 0 && strcmp(bad, cases[i].bad)))
			printf("#   got %d (%s)\n", r, bad);
	}

	/* the packaged site as shipped listens on every address: CM_AUTH=off must be refused with
	 * it; moved to loopback it is accepted */
	const char *srcdir = getenv("srcdir");
	char path[1024];
	snprintf(path, sizeof path, "%s/nginx/site.conf.in", srcdir && *srcdir ? srcdir : ".");
	char *site = cm_read_file(path, 1 << 20, NULL);
	ok(site != NULL, "read %s", path);
	if (!site)
		return;
	ok(loopback(site, bad, sizeof bad) == 0 && !strcmp(bad, "443"), "the packaged site is not loopback-only: %s", bad);
	struct cm_buf b = {0};
	for (const char *p = site; *p;) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p + 1) : strlen(p);
		/* every listener on all addresses (the API's 443 and the apps' 8444) */
		const char *l = p + strspn(p, " \t");
		unsigned port;
		char next;
		if (sscanf(l, "listen %u%c", &port, &next) == 2 && next == ' ')
			cm_buf_printf(&b, "\tlisten 127.0.0.1:%u ssl http2;\n", port);
		else if (sscanf(l, "listen [::]:%u%c", &port, &next) == 2 && next == ' ')
			cm_buf_printf(&b, "\tlisten [::1]:%u ssl http2;\n", port);
		else
			cm_buf_append(&b, p, n);
		p += n;
	}
	ok(loopback(cm_buf_str(&b), bad, sizeof bad) == 1, "the packaged site moved to loopback is accepted (%s)", bad);
	cm_buf_free(&b);
	free(site);
}

static void put(const char *dir, const char *rel, const char *text)
{
	char path[600];
	snprintf(path, sizeof path, "%s/%s", dir, rel);
	if (cm_write_file_atomic(path, text, strlen(text), 0644) < 0)
		printf("# cannot write %s\n", path);
}

/* The guard as the launcher and every program see it: cm_config_load with CM_AUTH=off. */
static int load_auth_off(const char *nginx_dir, struct cm_error *err)
{
	struct cm_config c;
	setenv("CM_AUTH", "off", 1);
	setenv("CM_HTTP_LISTEN", "127.0.0.1:4545", 1);
	setenv("CM_HTTPS_LISTEN", "off", 1);
	setenv("CM_RUN_DIR", "/run/container-manager", 1);
	setenv("CM_DATA_DIR", "/var/lib/container-manager", 1);
	setenv("CM_NGINX_DIR", nginx_dir, 1);
	memset(err, 0, sizeof *err);
	int rc = cm_config_load(&c, NULL, err);
	return rc == 0 && c.auth_off ? 0 : -1;
}

static void sites_tests(void)
{
	char dir[] = "/tmp/t_trust_nginx.XXXXXX";
	ok(mkdtemp(dir) != NULL, "temp nginx dir");
	char p[600];
	struct cm_error err;
	ok(load_auth_off(dir, &err) == 0, "no sites: CM_AUTH=off on loopback listeners is accepted (%s)", err.message);
	setenv("APPS_LISTEN", "127.0.0.1:4546,https://0.0.0.0:8444", 1);
	ok(load_auth_off(dir, &err) < 0 && !strcmp(err.field, "CM_AUTH") && strstr(err.message, "APPS_LISTEN has 0.0.0.0:8444"),
	   "an apps listener on every address makes CM_AUTH=off refused: %s", err.message);
	setenv("APPS_LISTEN", "127.0.0.1:4546,https://127.0.0.1:8444", 1);
	ok(load_auth_off(dir, &err) == 0, "apps listeners on loopback: accepted (%s)", err.message);
	unsetenv("APPS_LISTEN");
	snprintf(p, sizeof p, "%s/sites-available", dir);
	mkdir(p, 0755);
	snprintf(p, sizeof p, "%s/sites-enabled", dir);
	mkdir(p, 0755);
	snprintf(p, sizeof p, "%s/conf.d", dir);
	mkdir(p, 0755);
	const char *packaged = "server {\n\tlisten 443 ssl http2;\n\tlisten [::]:443 ssl http2;\n"
			       "\tinclude /run/container-manager/locations.con[f];\n}\n"
			       "server {\n\tlisten 127.0.0.1:8080;\n\tinclude /run/container-manager/locations.con[f];\n}\n";
	put(dir, "sites-available/container-manager", packaged);
	ok(load_auth_off(dir, &err) < 0 && !strcmp(err.field, "CM_AUTH") && strstr(err.message, "listens on 443"),
	   "the packaged site (443 on every address) makes CM_AUTH=off refused, not yet enabled too: %s", err.message);
	put(dir, "sites-available/container-manager",
	    "server { listen 127.0.0.1:8443 ssl; listen [::1]:8443 ssl; include /run/container-manager/locations.conf; }\n"
	    "server { listen 127.0.0.1:8080; include /run/container-manager/locations.conf; }\n");
	ok(load_auth_off(dir, &err) == 0, "the packaged site moved to loopback: accepted (%s)", err.message);
	put(dir, "sites-enabled/default", "server { listen 80 default_server; listen [::]:80; root /var/www/html; }\n");
	put(dir, "conf.d/other.conf", "server { listen 8081; location / { proxy_pass http://unix:/run/other.sock; } }\n");
	ok(load_auth_off(dir, &err) == 0, "sites that do not include this stack's snippets do not count (%s)", err.message);
	put(dir, "sites-enabled/mine", "server { listen 0.0.0.0:9000; include /run/container-manager/wsproxy.conf; }\n");
	ok(load_auth_off(dir, &err) < 0 && strstr(err.message, "sites-enabled/mine listens on 0.0.0.0:9000"),
	   "an enabled site of the administrator's that includes the snippets counts: %s", err.message);
	snprintf(p, sizeof p, "%s/sites-enabled/mine", dir);
	unlink(p);
	put(dir, "conf.d/cm.conf", "server { include /run/container-manager/locations.conf; }\n");
	ok(load_auth_off(dir, &err) < 0 && strstr(err.message, "*:80"), "a conf.d server without listen (*:80) counts: %s",
	   err.message);
	put(dir, "conf.d/cm.conf", "server { listen 127.0.0.1:1; include \"/run/container-manager/locations.conf; }\n");
	ok(load_auth_off(dir, &err) < 0 && strstr(err.message, "cannot be read"), "an unreadable site fails closed: %s",
	   err.message);
	snprintf(p, sizeof p, "%s/conf.d/cm.conf", dir);
	unlink(p);
	/* the run directory decides: a serve stack's own /run/container-manager/<hash> is not the
	 * packaged site's */
	put(dir, "sites-available/container-manager", packaged);
	setenv("CM_RUN_DIR", "/run/container-manager/0123abcd", 1);
	{
		struct cm_config c;
		memset(&err, 0, sizeof err);
		ok(cm_config_load(&c, NULL, &err) == 0 && c.auth_off,
		   "a stack with another run directory is not reached by the packaged site (%s)", err.message);
	}
	setenv("CM_NGINX_DIR", "etc/nginx", 1);
	{
		struct cm_config c;
		ok(cm_config_load(&c, NULL, &err) < 0 && !strcmp(err.field, "CM_NGINX_DIR"), "CM_NGINX_DIR must be absolute");
	}
	const char *names[] = {"sites-available/container-manager", "sites-enabled/default", "conf.d/other.conf"};
	for (size_t i = 0; i < CM_ARRAY_LEN(names); i++) {
		snprintf(p, sizeof p, "%s/%s", dir, names[i]);
		unlink(p);
	}
	const char *dirs[] = {"sites-available", "sites-enabled", "conf.d", ""};
	for (size_t i = 0; i < CM_ARRAY_LEN(dirs); i++) {
		snprintf(p, sizeof p, "%s/%s", dir, dirs[i]);
		rmdir(p);
	}
	unsetenv("CM_AUTH");
	unsetenv("CM_NGINX_DIR");
}

int main(void)
{
	secret_tests();
	listen_tests();
	sites_tests();
	return tap_done();
}
