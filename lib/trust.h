/* trust.h: what the stack's parts prove to each other. nginx proves itself to the WebSocket
 * helper with a per-start secret header (the helper's sockets are open to the whole www-data
 * group, which other sites and PHP pools share); CM_AUTH=off is only honoured when every nginx
 * listener that reaches the service is loopback, the packaged site's included. */
#ifndef CM_TRUST_H
#define CM_TRUST_H

#include "cm.h"

/* The header nginx adds to every request it proxies to the helper (lower case, with the colon,
 * as libwebsockets' custom header lookup wants it). */
#define CM_PROXY_SECRET_LWS_HEADER "x-cm-proxy-secret:"
#define CM_PROXY_SECRET_HEX 64 /* 32 random bytes, hex */
/* In the run directory: the secret (for the helper) and the nginx include that sends it. Both
 * 0600, owned by whoever renders them (root under `serve` as root, the units' user under
 * systemd): nginx's master reads its configuration before it drops to www-data, the workers
 * and every other www-data process cannot read them. */
#define CM_PROXY_SECRET_FILE "proxy.secret"
#define CM_PROXY_SECRET_CONF "proxysecret.conf"
/* The same secret as a FastCGI parameter (CM_PROXY_SECRET) for every location that passes to
 * the worker pool, whose socket the www-data group can reach as well: a parameter only nginx's
 * configuration can set (client headers arrive as HTTP_*), so REMOTE_ADDR, DOCUMENT_URI and the
 * sub-request marks are believed only with it. */
#define CM_PROXY_SECRET_FCGI_CONF "proxysecret-fcgi.conf"
#define CM_PROXY_SECRET_PARAM "CM_PROXY_SECRET"

/* Makes a fresh secret (getrandom) and writes the three files into run_dir, replacing the previous
 * ones atomically. The secret never goes to a log. Returns -1 with err. */
int cm_proxy_secret_make(const char *run_dir, struct cm_error *err);
/* Reads the secret written by cm_proxy_secret_make into out. Returns -1 with err when the
 * file is missing, unreadable or malformed. */
int cm_proxy_secret_load(const char *run_dir, char out[CM_PROXY_SECRET_HEX + 1], struct cm_error *err);
/* True when got is exactly expected; the time taken does not depend on where they differ. */
bool cm_proxy_secret_ok(const char *expected, const char *got);

/* Reads the nginx configuration text conf and checks every `listen` directive (and every
 * `server` block without one, which nginx puts on *:80). Returns 1 when each one is a loopback
 * address or a unix socket, 0 when one is not (its address copied into bad), -1 when the text
 * cannot be read as nginx configuration (an unterminated quote, unbalanced braces). */
int cm_nginx_listeners_loopback(const char *conf, char *bad, size_t badsz);
/* The nginx sites that reach a stack whose run directory is run_dir: the packaged site
 * (nginx_dir/sites-available/container-manager, enabled or not yet), every file of
 * nginx_dir/sites-enabled and every nginx_dir/conf.d/ *.conf that names run_dir (their
 * includes of the rendered snippets). Returns 0 when each listener of those is loopback; -1
 * with the reason in why when one is not, or when a file cannot be read or understood (the
 * guard fails closed). Missing files and directories count as no site. */
int cm_nginx_sites_loopback(const char *nginx_dir, const char *run_dir, char *why, size_t whysz);

#endif
