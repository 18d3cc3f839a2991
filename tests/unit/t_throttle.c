/* t_throttle.c: failed-login counters: keys (IPv6 by /64), sliding windows, and slots that
 * another address can never reset. */
#include "config.h"
#include "throttle.h"
#include "tap.h"

static const char *key(const char *addr)
{
	static char k[4][CM_THROTTLE_KEY];
	static int i;
	char *out = k[i++ % 4];
	cm_throttle_key(addr, out);
	return out;
}

int main(void)
{
	is_str(key("192.0.2.7"), "4:192.0.2.7", "IPv4 keyed by the address");
	is_str(key("::ffff:192.0.2.7"), "4:192.0.2.7", "IPv4-mapped IPv6 keyed as the IPv4 address");
	is_str(key("2001:db8:1:2:aaaa::1"), "6:20010db800010002", "IPv6 keyed by its /64");
	ok(!strcmp(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:ffff:ffff:ffff")),
	   "two addresses of one /64 share a key");
	ok(strcmp(key("2001:db8:1:2::1"), key("2001:db8:1:3::1")) != 0, "another /64, another key");
	is_str(key("fe80::1%eth0"), "6:fe80000000000000", "a zone index is not part of the key");
	ok(!strncmp(key("not an address"), "?:", 2), "anything else: a hash of the text");
	ok(strlen(key("2001:0db8:0000:0000:0000:0000:0000:0001")) < CM_THROTTLE_KEY, "keys fit");

	/* a table of one slot: every key collides */
	struct cm_throttle *t = cm_throttle_new(1);
	ok(t != NULL, "shared table");
	if (!t)
		return tap_done();
	int64_t now = 1000000; /* window 100 of 10 s, at its start */
	const char *a = key("192.0.2.1"), *b = key("192.0.2.2");
	for (int i = 0; i < 20; i++)
		cm_throttle_fail(t, a, now, 10);
	ok(cm_throttle_recent(t, a, now, 10) >= 20, "20 failures of A counted");
	for (int i = 0; i < 5; i++)
		cm_throttle_fail(t, b, now, 10);
	ok(cm_throttle_recent(t, a, now, 10) >= 20, "B's failures in A's slot did not reset A's counter");
	ok(cm_throttle_recent(t, b, now, 10) >= 5, "B's failures are counted (in the overflow counter)");
	for (int i = 0; i < 15; i++)
		cm_throttle_fail(t, b, now, 10);
	ok(cm_throttle_recent(t, b, now, 10) >= 20, "B can be throttled too");
	ok(cm_throttle_recent(t, key("192.0.2.3"), now, 10) >= 20,
	   "an address with no slot of its own shares the overflow counter (never a fresh allowance)");
	/* sliding window: half way through the next window half of the last one still counts */
	ok(cm_throttle_recent(t, a, now + 15000, 10) >= 9.9 && cm_throttle_recent(t, a, now + 15000, 10) <= 10.1,
	   "half a window later half of the failures still count (%.1f)", cm_throttle_recent(t, a, now + 15000, 10));
	/* lapsed: two windows later the slot is free for another key */
	int64_t later = now + 25000;
	ok(cm_throttle_recent(t, a, later, 10) == 0, "A's failures lapse after two windows");
	cm_throttle_fail(t, b, later, 10);
	ok(cm_throttle_recent(t, b, later, 10) >= 1 && cm_throttle_recent(t, b, later, 10) < 2,
	   "a lapsed slot is taken by another key, counting from 1");
	ok(cm_throttle_recent(t, a, later, 10) == 0, "and A starts again at 0");

	/* a bigger table: many keys, each its own counter */
	struct cm_throttle *t2 = cm_throttle_new(4096);
	int wrong = 0;
	char ka[600][CM_THROTTLE_KEY];
	for (int i = 0; i < 600; i++) {
		char addr[64];
		snprintf(addr, sizeof addr, "2001:db8:%x::1", i);
		cm_throttle_key(addr, ka[i]);
		for (int j = 0; j <= i % 7; j++)
			cm_throttle_fail(t2, ka[i], now, 10);
	}
	for (int i = 0; i < 600; i++)
		if (cm_throttle_recent(t2, ka[i], now, 10) != (double)(i % 7 + 1))
			wrong++;
	ok(t2 && wrong == 0, "600 /64s in 4096 slots: each keeps exactly its own count (%d wrong)", wrong);
	return tap_done();
}
