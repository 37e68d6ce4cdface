/* The C test program: every part of the C ABI that exists, against one member in this
 * process and a remote client connected to it. Run under valgrind by tests/ffi_c.rs.
 * Prints one line per check and "N passed, N failed" at the end; exits non-zero on failure. */
#define _GNU_SOURCE /* memmem */
#include "haven.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SECRET "sixteen or more bytes of secret"

static int passed, failed;

#define CHECK(cond)                                                                         \
    do {                                                                                    \
        if (cond) {                                                                         \
            passed++;                                                                       \
        } else {                                                                            \
            failed++;                                                                       \
            fprintf(stderr, "FAILED %s:%d: %s (last error: %s)\n", __FILE__, __LINE__, #cond, \
                    haven_last_error());                                                    \
        }                                                                                   \
    } while (0)

#define K(s) (const uint8_t *)(s), strlen(s)

static int free_port(void) {
    struct sockaddr_in addr;
    socklen_t len = sizeof addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0) {
        perror("free_port");
        exit(2);
    }
    close(fd);
    return ntohs(addr.sin_port);
}

static pthread_mutex_t log_mutex = PTHREAD_MUTEX_INITIALIZER;
static int log_events;

static void on_log(void *user_data, int level, const char *message) {
    pthread_mutex_lock(&log_mutex);
    if (user_data == &log_events && level >= HAVEN_LOG_ERROR && level <= HAVEN_LOG_TRACE &&
        strstr(message, "event=") != NULL) {
        log_events++;
    }
    pthread_mutex_unlock(&log_mutex);
}

static int value_is(haven_t *h, const char *key, const char *expected) {
    haven_buf_t value = {0};
    int found = -1, ok;
    if (haven_get(h, K(key), &value, &found) != HAVEN_OK) {
        return 0;
    }
    if (expected == NULL) {
        ok = found == 0 && value.data == NULL;
    } else {
        ok = found == 1 && value.len == strlen(expected) &&
             memcmp(value.data, expected, value.len) == 0;
    }
    haven_buf_free(&value);
    return ok;
}

static void test_versions_and_errors(void) {
    char expected[64];
    haven_buf_t buf = {0};
    int found = 7;
    snprintf(expected, sizeof expected, "%d.%d.%d", HAVEN_VERSION_MAJOR, HAVEN_VERSION_MINOR,
             HAVEN_VERSION_PATCH);
    CHECK(strcmp(haven_version(), expected) == 0);
    CHECK(haven_abi_version() == HAVEN_ABI_VERSION);
    CHECK(haven_last_error() != NULL);
    CHECK(strcmp(haven_code_name(HAVEN_ERR_TIMEOUT), "HAVEN_ERR_TIMEOUT") == 0);
    /* A NULL handle is refused, and the outputs stay as they were. */
    CHECK(haven_get(NULL, K("k"), &buf, &found) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(strstr(haven_last_error(), "handle") != NULL);
    CHECK(found == 7 && buf.data == NULL);
    /* A panic inside haven stays inside haven. */
    CHECK(haven_test_panic() == HAVEN_ERR_INTERNAL);
    CHECK(strstr(haven_last_error(), "panic") != NULL);
    /* Freeing twice and freeing NULL are harmless. */
    haven_buf_free(&buf);
    haven_buf_free(&buf);
    haven_buf_free(NULL);
    CHECK(haven_set_log_callback(on_log, &log_events, 42) == HAVEN_ERR_INVALID_ARGUMENT);
}

static void test_config_errors(void) {
    haven_config_t *cfg = NULL;
    haven_t *h = NULL;
    CHECK(haven_config_new(&cfg) == HAVEN_OK);
    CHECK(haven_config_set(cfg, "colour", "blue") == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(strstr(haven_last_error(), "colour") != NULL);
    CHECK(haven_config_set(cfg, "id", "one") == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(strstr(haven_last_error(), "id") != NULL);
    CHECK(haven_config_set(cfg, "secret", "short") == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_config_set(cfg, NULL, "1") == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_config_set(cfg, "id", "\xff\xfe") == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_config_set(cfg, "id", "1") == HAVEN_OK);
    CHECK(haven_open(cfg, &h) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(h == NULL);
    haven_config_free(cfg);
    haven_config_free(NULL);
    haven_close(NULL);
}

static void test_kv(haven_t *h) {
    int swapped = -1, existed = -1;
    uint8_t *big = calloc(4097, 1);
    memset(big, 'k', 4097);

    CHECK(haven_put(h, K("a/1"), K("one")) == HAVEN_OK);
    CHECK(value_is(h, "a/1", "one"));
    CHECK(value_is(h, "missing", NULL));
    /* An empty value is a value, not an absent key. */
    CHECK(haven_put(h, K("empty"), NULL, 0) == HAVEN_OK);
    CHECK(value_is(h, "empty", ""));

    CHECK(haven_cas(h, K("a/1"), K("two"), 0, K("three"), &swapped) == HAVEN_OK && swapped == 0);
    CHECK(haven_cas(h, K("a/1"), K("one"), 0, K("uno"), &swapped) == HAVEN_OK && swapped == 1);
    CHECK(value_is(h, "a/1", "uno"));
    CHECK(haven_cas(h, K("a/2"), NULL, 0, 1, K("two"), &swapped) == HAVEN_OK && swapped == 1);
    CHECK(haven_cas(h, K("a/2"), NULL, 0, 1, K("again"), &swapped) == HAVEN_OK && swapped == 0);

    CHECK(haven_delete(h, K("empty"), &existed) == HAVEN_OK && existed == 1);
    CHECK(haven_delete(h, K("empty"), &existed) == HAVEN_OK && existed == 0);
    CHECK(haven_delete(h, K("empty"), NULL) == HAVEN_OK);

    /* Bad input: nothing is written. */
    CHECK(haven_put(h, big, 4097, K("v")) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(strstr(haven_last_error(), "4097") != NULL);
    CHECK(haven_put(h, NULL, 3, K("v")) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_put(h, K(""), K("v")) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_put(h, K("a/x"), NULL, 5) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(value_is(h, "a/x", NULL));
    CHECK(haven_cas(h, K("a/1"), K("uno"), 0, K("x"), NULL) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(value_is(h, "a/1", "uno"));
    CHECK(haven_get_with(h, 9, K("a/1"), NULL, NULL) == HAVEN_ERR_INVALID_ARGUMENT);
    free(big);
}

static void test_scan_and_txn(haven_t *h) {
    haven_buf_t entries = {0}, results = {0};
    haven_record_t record;
    size_t count = 0, offset = 0, seen = 0;
    int more = -1, succeeded = -1;
    haven_compare_t compare;
    haven_txn_op_t then_ops[2], else_op;

    CHECK(haven_put(h, K("b/1"), K("bee")) == HAVEN_OK);
    CHECK(haven_scan(h, K("a/"), 10, &entries, &count, &more) == HAVEN_OK);
    CHECK(count == 2 && more == 0);
    while (offset < entries.len) {
        CHECK(haven_record_next(&entries, &offset, &record) == HAVEN_OK);
        CHECK(record.has_value == 1 && record.key_len == 3 && memcmp(record.key, "a/", 2) == 0);
        seen++;
    }
    CHECK(seen == 2);
    CHECK(haven_record_next(&entries, &offset, &record) == HAVEN_ERR_INVALID_ARGUMENT);
    haven_buf_free(&entries);
    CHECK(haven_scan(h, K("a/"), 1, &entries, &count, &more) == HAVEN_OK);
    CHECK(count == 1 && more == 1);
    haven_buf_free(&entries);

    memset(&compare, 0, sizeof compare);
    compare.target = HAVEN_CMP_VALUE;
    compare.op = HAVEN_CMP_EQUAL;
    compare.key = (const uint8_t *)"a/1";
    compare.key_len = 3;
    compare.value = (const uint8_t *)"uno";
    compare.value_len = 3;
    memset(then_ops, 0, sizeof then_ops);
    then_ops[0].kind = HAVEN_OP_PUT;
    then_ops[0].key = (const uint8_t *)"a/3";
    then_ops[0].key_len = 3;
    then_ops[0].value = (const uint8_t *)"tres";
    then_ops[0].value_len = 4;
    then_ops[1].kind = HAVEN_OP_GET;
    then_ops[1].key = (const uint8_t *)"a/3";
    then_ops[1].key_len = 3;
    memset(&else_op, 0, sizeof else_op);
    else_op.kind = HAVEN_OP_DELETE;
    else_op.key = (const uint8_t *)"a/1";
    else_op.key_len = 3;

    CHECK(haven_txn(h, &compare, 1, then_ops, 2, &else_op, 1, &succeeded, &results) == HAVEN_OK);
    CHECK(succeeded == 1);
    offset = 0;
    CHECK(haven_record_next(&results, &offset, &record) == HAVEN_OK && record.has_value == 0);
    CHECK(haven_record_next(&results, &offset, &record) == HAVEN_OK && record.has_value == 1 &&
          record.value_len == 4 && memcmp(record.value, "tres", 4) == 0);
    CHECK(offset == results.len);
    haven_buf_free(&results);
    /* The compare fails now (a/1 is "uno", not "dos"): the else branch deletes a/1. */
    compare.value = (const uint8_t *)"dos";
    CHECK(haven_txn(h, &compare, 1, then_ops, 2, &else_op, 1, &succeeded, NULL) == HAVEN_OK);
    CHECK(succeeded == 0);
    CHECK(value_is(h, "a/1", NULL));
    /* A bad op kind is refused before anything runs. */
    else_op.kind = 99;
    CHECK(haven_txn(h, NULL, 0, &else_op, 1, NULL, 0, &succeeded, NULL) ==
          HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_txn(h, NULL, 1, NULL, 0, NULL, 0, &succeeded, NULL) == HAVEN_ERR_INVALID_ARGUMENT);
}

static void test_status(haven_t *h) {
    haven_buf_t json = {0};
    char *text;
    CHECK(haven_status_json(h, &json) == HAVEN_OK);
    text = calloc(json.len + 1, 1);
    memcpy(text, json.data, json.len);
    CHECK(strstr(text, "\"role\":\"leader\"") != NULL);
    CHECK(strstr(text, "\"members\":[{\"id\":1,") != NULL);
    free(text);
    haven_buf_free(&json);
    CHECK(haven_members_json(h, &json) == HAVEN_OK && json.len > 2 && json.data[0] == '[');
    haven_buf_free(&json);
    /* A single voter can only hand leadership to itself; removing an unknown member fails. */
    CHECK(haven_promote_learner(h, 77) != HAVEN_OK);
}

/* ----- sessions, locks, fencing ----- */

struct waiter {
    haven_t *h;
    haven_session_t *session;
    uint64_t token;
    int rc;
};

static void *wait_for_lock(void *arg) {
    struct waiter *w = arg;
    w->rc = haven_lock(w->h, w->session, "jobs", HAVEN_LOCK_EXCLUSIVE, -1, &w->token);
    return NULL;
}

static int fenced_put(haven_t *h, uint64_t token, int *succeeded) {
    haven_compare_t fence;
    haven_txn_op_t put;
    memset(&fence, 0, sizeof fence);
    fence.target = HAVEN_CMP_LOCK_HELD;
    fence.key = (const uint8_t *)"jobs";
    fence.key_len = 4;
    fence.number = token;
    memset(&put, 0, sizeof put);
    put.kind = HAVEN_OP_PUT;
    put.key = (const uint8_t *)"jobs/state";
    put.key_len = 10;
    put.value = (const uint8_t *)"done";
    put.value_len = 4;
    return haven_txn(h, &fence, 1, &put, 1, NULL, 0, succeeded, NULL);
}

static void test_sessions_and_locks(haven_t *h) {
    haven_session_t *s1 = NULL, *s2 = NULL, *untouched = (haven_session_t *)&passed;
    uint64_t id1 = 0, id2 = 0, token = 0, other = 77;
    int state = -1, valid = -1, succeeded = -1;
    haven_buf_t json = {0};
    struct waiter waiter;
    pthread_t thread;

    CHECK(haven_session_grant(h, 5000, &s1) == HAVEN_OK && s1 != NULL);
    CHECK(haven_session_grant(h, 5000, &s2) == HAVEN_OK && s2 != NULL);
    CHECK(haven_session_grant(h, 0, &untouched) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(untouched == (haven_session_t *)&passed);
    CHECK(haven_session_id(s1, &id1) == HAVEN_OK && haven_session_id(s2, &id2) == HAVEN_OK);
    CHECK(id1 > 0 && id2 > 0 && id1 != id2);
    CHECK(haven_session_state(s1, &state) == HAVEN_OK && state == HAVEN_SESSION_ALIVE);

    /* Take it; a second session is refused at once, and after a wait. */
    CHECK(haven_lock(h, s1, "jobs", HAVEN_LOCK_EXCLUSIVE, 0, &token) == HAVEN_OK && token > 0);
    CHECK(haven_lock(h, s2, "jobs", HAVEN_LOCK_EXCLUSIVE, 0, &other) == HAVEN_ERR_TIMEOUT);
    CHECK(haven_lock(h, s2, "jobs", HAVEN_LOCK_SHARED, 300, &other) == HAVEN_ERR_TIMEOUT);
    CHECK(other == 77);
    CHECK(haven_check_token(h, "jobs", token, &valid) == HAVEN_OK && valid == 1);
    CHECK(haven_check_token(h, "jobs", token + 1000, &valid) == HAVEN_OK && valid == 0);
    CHECK(fenced_put(h, token, &succeeded) == HAVEN_OK && succeeded == 1);
    CHECK(value_is(h, "jobs/state", "done"));
    CHECK(haven_locks_json(h, &json) == HAVEN_OK);
    CHECK(json.len > 0 && memmem(json.data, json.len, "\"name\":\"jobs\"", 13) != NULL);
    haven_buf_free(&json);

    /* Bad input changes nothing. */
    CHECK(haven_lock(h, NULL, "jobs", HAVEN_LOCK_EXCLUSIVE, 0, &other) ==
          HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_lock(h, s2, "jobs", 7, 0, &other) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_lock(h, s2, "jobs", HAVEN_LOCK_EXCLUSIVE, -5, &other) ==
          HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_lock(h, s2, "", HAVEN_LOCK_EXCLUSIVE, 0, &other) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_lock(h, s2, "jobs", HAVEN_LOCK_EXCLUSIVE, 0, NULL) ==
          HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_check_token(h, "jobs", token, NULL) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(other == 77);
    CHECK(haven_check_token(h, "jobs", token, &valid) == HAVEN_OK && valid == 1);

    /* A waiter blocked in another thread gets the lock when it is released, with a higher
     * token; the old token then fences nothing. */
    waiter.h = h;
    waiter.session = s2;
    waiter.token = 0;
    waiter.rc = -1;
    CHECK(pthread_create(&thread, NULL, wait_for_lock, &waiter) == 0);
    for (;;) {
        int queued;
        CHECK(haven_locks_json(h, &json) == HAVEN_OK);
        queued = memmem(json.data, json.len, "\"waiters\":[{", 12) != NULL;
        haven_buf_free(&json);
        if (queued) {
            break;
        }
        usleep(10 * 1000);
    }
    CHECK(haven_unlock(h, s1, "jobs", token) == HAVEN_OK);
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK(waiter.rc == HAVEN_OK && waiter.token > token);
    CHECK(haven_unlock(h, s1, "jobs", token) == HAVEN_ERR_LOCK_NOT_HELD);
    CHECK(haven_check_token(h, "jobs", token, &valid) == HAVEN_OK && valid == 0);
    CHECK(fenced_put(h, token, &succeeded) == HAVEN_OK && succeeded == 0);
    CHECK(fenced_put(h, waiter.token, &succeeded) == HAVEN_OK && succeeded == 1);

    /* Revoking a session releases its locks and ends it. */
    CHECK(haven_session_revoke(s2) == HAVEN_OK);
    CHECK(haven_session_state(s2, &state) == HAVEN_OK && state == HAVEN_SESSION_LOST);
    CHECK(haven_check_token(h, "jobs", waiter.token, &valid) == HAVEN_OK && valid == 0);
    CHECK(haven_lock(h, s2, "jobs", HAVEN_LOCK_EXCLUSIVE, 0, &other) ==
          HAVEN_ERR_SESSION_EXPIRED);
    CHECK(haven_lock(h, s1, "jobs", HAVEN_LOCK_EXCLUSIVE, 0, &token) == HAVEN_OK);
    haven_session_free(s2);
    CHECK(haven_session_revoke(s1) == HAVEN_OK);
    haven_session_free(s1);
    haven_session_free(NULL);
}

/* ----- watch ----- */

#define MAX_SEEN 16

struct watched {
    pthread_mutex_t mutex;
    pthread_cond_t changed;
    int kinds[MAX_SEEN];
    char keys[MAX_SEEN][16];
    char values[MAX_SEEN][16];
    uint64_t revisions[MAX_SEEN];
    int seen;
    int ends;
    int wrong_thread;
    pthread_t caller;
    haven_watch_t *self; /* set: the callback cancels its own watch at the first event */
};

static void on_watch(void *user_data, const haven_watch_event_t *event) {
    struct watched *w = user_data;
    pthread_mutex_lock(&w->mutex);
    if (pthread_equal(pthread_self(), w->caller)) {
        w->wrong_thread++;
    }
    if (event->kind == HAVEN_WATCH_END) {
        w->ends++;
    } else if (event->kind != HAVEN_WATCH_PROGRESS && w->seen < MAX_SEEN) {
        w->kinds[w->seen] = event->kind;
        w->revisions[w->seen] = event->revision;
        snprintf(w->keys[w->seen], 16, "%.*s", (int)event->key_len, (const char *)event->key);
        snprintf(w->values[w->seen], 16, "%.*s", (int)event->value_len,
                 event->value ? (const char *)event->value : "");
        w->seen++;
    }
    pthread_cond_broadcast(&w->changed);
    pthread_mutex_unlock(&w->mutex);
    if (w->self != NULL && event->kind != HAVEN_WATCH_PROGRESS) {
        haven_watch_t *self = w->self;
        w->self = NULL;
        haven_watch_cancel(self); /* from inside its own callback: returns at once */
    }
}

static void wait_seen(struct watched *w, int n) {
    pthread_mutex_lock(&w->mutex);
    while (w->seen < n) {
        pthread_cond_wait(&w->changed, &w->mutex);
    }
    pthread_mutex_unlock(&w->mutex);
}

static void watched_init(struct watched *w) {
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mutex, NULL);
    pthread_cond_init(&w->changed, NULL);
    w->caller = pthread_self();
}

static void watched_destroy(struct watched *w) {
    pthread_mutex_destroy(&w->mutex);
    pthread_cond_destroy(&w->changed);
}

static void test_watch(haven_t *h) {
    struct watched w, self_cancel;
    haven_watch_t *watch = NULL, *untouched = (haven_watch_t *)&passed;
    int seen_after_cancel;

    watched_init(&w);
    CHECK(haven_watch(h, K("w/"), 0, NULL, &w, &untouched) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(untouched == (haven_watch_t *)&passed);
    CHECK(haven_watch(h, K("w/"), 0, on_watch, &w, &watch) == HAVEN_OK && watch != NULL);
    CHECK(haven_put(h, K("w/1"), K("a")) == HAVEN_OK);
    CHECK(haven_put(h, K("x/1"), K("not watched")) == HAVEN_OK);
    CHECK(haven_delete(h, K("w/1"), NULL) == HAVEN_OK);
    wait_seen(&w, 2);
    pthread_mutex_lock(&w.mutex);
    CHECK(w.seen == 2 && w.wrong_thread == 0 && w.ends == 0);
    CHECK(w.kinds[0] == HAVEN_WATCH_PUT && strcmp(w.keys[0], "w/1") == 0 &&
          strcmp(w.values[0], "a") == 0);
    CHECK(w.kinds[1] == HAVEN_WATCH_DELETE && strcmp(w.keys[1], "w/1") == 0);
    CHECK(w.revisions[0] > 0 && w.revisions[1] > w.revisions[0]);
    pthread_mutex_unlock(&w.mutex);
    /* Cancel from this thread: when it returns, no callback runs or starts. */
    haven_watch_cancel(watch);
    pthread_mutex_lock(&w.mutex);
    seen_after_cancel = w.seen;
    pthread_mutex_unlock(&w.mutex);
    CHECK(haven_put(h, K("w/2"), K("b")) == HAVEN_OK);
    CHECK(value_is(h, "w/2", "b"));
    pthread_mutex_lock(&w.mutex);
    CHECK(w.seen == seen_after_cancel);
    pthread_mutex_unlock(&w.mutex);
    haven_watch_cancel(NULL);
    watched_destroy(&w);

    /* A callback that cancels its own watch. */
    watched_init(&self_cancel);
    CHECK(haven_watch(h, K("w/"), 0, on_watch, &self_cancel, &watch) == HAVEN_OK);
    self_cancel.self = watch;
    CHECK(haven_put(h, K("w/3"), K("c")) == HAVEN_OK);
    CHECK(haven_put(h, K("w/4"), K("d")) == HAVEN_OK);
    wait_seen(&self_cancel, 1);
    CHECK(value_is(h, "w/4", "d"));
    pthread_mutex_lock(&self_cancel.mutex);
    CHECK(self_cancel.seen == 1 && strcmp(self_cancel.keys[0], "w/3") == 0);
    pthread_mutex_unlock(&self_cancel.mutex);
    /* The thread ends by itself right after the callback; give it the moment it needs before
     * the mutex goes away. */
    usleep(200 * 1000);
    watched_destroy(&self_cancel);
}

/* ----- elections ----- */

struct observed {
    pthread_mutex_t mutex;
    pthread_cond_t changed;
    int kinds[MAX_SEEN];
    char values[MAX_SEEN][16];
    uint64_t tokens[MAX_SEEN];
    uint64_t revisions[MAX_SEEN];
    int seen;
    int ends;
    int wrong_thread;
    pthread_t caller;
};

static void on_change(void *user_data, const haven_leader_change_t *change) {
    struct observed *o = user_data;
    pthread_mutex_lock(&o->mutex);
    if (pthread_equal(pthread_self(), o->caller)) {
        o->wrong_thread++;
    }
    if (change->kind == HAVEN_OBSERVE_END) {
        o->ends++;
    } else if (o->seen < MAX_SEEN) {
        o->kinds[o->seen] = change->kind;
        o->tokens[o->seen] = change->token;
        o->revisions[o->seen] = change->revision;
        snprintf(o->values[o->seen], 16, "%.*s", (int)change->value_len,
                 change->value ? (const char *)change->value : "");
        o->seen++;
    }
    pthread_cond_broadcast(&o->changed);
    pthread_mutex_unlock(&o->mutex);
}

struct self_cancelling {
    pthread_mutex_t mutex;
    haven_observe_t *self; /* set: the next call cancels the observer from inside */
    int cancelled;
    int after; /* calls after the cancel: must stay 0 */
};

static void on_change_cancel(void *user_data, const haven_leader_change_t *change) {
    struct self_cancelling *c = user_data;
    haven_observe_t *self;
    (void)change;
    pthread_mutex_lock(&c->mutex);
    c->after += c->cancelled;
    self = c->self;
    c->self = NULL;
    c->cancelled |= self != NULL;
    pthread_mutex_unlock(&c->mutex);
    if (self != NULL) {
        haven_observe_cancel(self); /* from inside its own callback: returns at once */
    }
}

/* Wait until the observer's latest change is a leader with `token`. */
static void wait_observed(struct observed *o, uint64_t token) {
    pthread_mutex_lock(&o->mutex);
    while (o->seen == 0 || o->kinds[o->seen - 1] != HAVEN_OBSERVE_LEADER ||
           o->tokens[o->seen - 1] != token) {
        pthread_cond_wait(&o->changed, &o->mutex);
    }
    pthread_mutex_unlock(&o->mutex);
}

struct campaigner {
    haven_t *h;
    haven_session_t *session;
    uint64_t token;
    int rc;
};

static void *campaign_forever(void *arg) {
    struct campaigner *c = arg;
    c->rc = haven_campaign(c->h, c->session, "leader", K("two"), -1, &c->token);
    return NULL;
}

static int leader_is(haven_t *h, const char *value, uint64_t token, uint64_t session) {
    haven_buf_t v = {0};
    uint64_t t = 0, s = 0;
    int found = -1, ok;
    if (haven_leader(h, "leader", &v, &t, &s, &found) != HAVEN_OK) {
        return 0;
    }
    ok = found == 1 && v.len == strlen(value) && memcmp(v.data, value, v.len) == 0 &&
         t == token && s == session;
    haven_buf_free(&v);
    return ok;
}

static void test_elections(haven_t *h) {
    haven_session_t *s1 = NULL, *s2 = NULL;
    haven_observe_t *observer = NULL, *untouched = (haven_observe_t *)&passed;
    struct observed o;
    struct campaigner second;
    pthread_t thread;
    haven_buf_t value = {0};
    uint64_t id1 = 0, id2 = 0, t1 = 0, t2 = 0, other = 77, token = 0, session = 0;
    int found = -1, i;

    CHECK(haven_session_grant(h, 5000, &s1) == HAVEN_OK && haven_session_id(s1, &id1) == 0);
    CHECK(haven_session_grant(h, 5000, &s2) == HAVEN_OK && haven_session_id(s2, &id2) == 0);
    /* Nobody leads yet. */
    CHECK(haven_leader(h, "leader", &value, &token, &session, &found) == HAVEN_OK);
    CHECK(found == 0 && value.data == NULL && token == 0 && session == 0);

    /* Lead, and be seen leading. */
    CHECK(haven_campaign(h, s1, "leader", K("one"), -1, &t1) == HAVEN_OK && t1 > 0);
    CHECK(leader_is(h, "one", t1, id1));
    memset(&o, 0, sizeof o);
    pthread_mutex_init(&o.mutex, NULL);
    pthread_cond_init(&o.changed, NULL);
    o.caller = pthread_self();
    CHECK(haven_observe(h, "leader", NULL, &o, &untouched) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_observe(h, "", on_change, &o, &untouched) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(untouched == (haven_observe_t *)&passed);
    CHECK(haven_observe(h, "leader", on_change, &o, &observer) == HAVEN_OK && observer != NULL);
    wait_observed(&o, t1);
    CHECK(haven_proclaim(h, "leader", t1, K("uno")) == HAVEN_OK);
    CHECK(leader_is(h, "uno", t1, id1));

    /* A second campaign that times out is withdrawn: it never leads, even once the leader
     * resigns. */
    CHECK(haven_campaign(h, s2, "leader", K("two"), 300, &other) == HAVEN_ERR_TIMEOUT);
    CHECK(other == 77);
    CHECK(leader_is(h, "uno", t1, id1));
    CHECK(haven_resign(h, "leader", t1) == HAVEN_OK);
    CHECK(haven_leader(h, "leader", NULL, NULL, NULL, &found) == HAVEN_OK && found == 0);
    CHECK(haven_resign(h, "leader", t1) == HAVEN_ERR_LOCK_NOT_HELD);
    CHECK(haven_proclaim(h, "leader", t1, K("late")) == HAVEN_ERR_LOCK_NOT_HELD);

    /* Lead again; a second campaigner waiting in another thread takes over on resign. */
    CHECK(haven_campaign(h, s1, "leader", K("one"), 0, &t2) == HAVEN_OK && t2 > t1);
    CHECK(haven_campaign(h, s1, "leader", K("one"), 0, &other) == HAVEN_ERR_INVALID_ARGUMENT);
    second.h = h;
    second.session = s2;
    second.token = 0;
    second.rc = -1;
    CHECK(pthread_create(&thread, NULL, campaign_forever, &second) == 0);
    wait_observed(&o, t2);
    CHECK(haven_resign(h, "leader", t2) == HAVEN_OK);
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK(second.rc == HAVEN_OK && second.token > t2);
    CHECK(leader_is(h, "two", second.token, id2));
    wait_observed(&o, second.token);

    /* What the observer saw, in order, on its own thread: one, uno, nobody, ..., two. */
    pthread_mutex_lock(&o.mutex);
    CHECK(o.wrong_thread == 0 && o.ends == 0 && o.seen >= 5);
    CHECK(o.kinds[0] == HAVEN_OBSERVE_LEADER && strcmp(o.values[0], "one") == 0 &&
          o.tokens[0] == t1);
    CHECK(o.kinds[1] == HAVEN_OBSERVE_LEADER && strcmp(o.values[1], "uno") == 0 &&
          o.tokens[1] == t1);
    CHECK(o.kinds[2] == HAVEN_OBSERVE_NO_LEADER && o.tokens[2] == 0);
    CHECK(o.kinds[3] == HAVEN_OBSERVE_LEADER && o.tokens[3] == t2);
    CHECK(strcmp(o.values[o.seen - 1], "two") == 0);
    for (i = 1; i < o.seen; i++) {
        CHECK(o.revisions[i] > o.revisions[i - 1]);
    }
    pthread_mutex_unlock(&o.mutex);
    haven_observe_cancel(observer);
    haven_observe_cancel(NULL);

    /* An observer whose callback cancels it: no deadlock, no call after. */
    {
        struct self_cancelling c;
        haven_observe_t *self = NULL;
        memset(&c, 0, sizeof c);
        pthread_mutex_init(&c.mutex, NULL);
        CHECK(haven_observe(h, "quiet", on_change_cancel, &c, &self) == HAVEN_OK);
        pthread_mutex_lock(&c.mutex);
        c.self = self;
        pthread_mutex_unlock(&c.mutex);
        /* A change after `self` is set: that call cancels (the first call may have come before). */
        CHECK(haven_campaign(h, s1, "quiet", K("q"), -1, &token) == HAVEN_OK);
        CHECK(haven_proclaim(h, "quiet", token, K("r")) == HAVEN_OK);
        CHECK(haven_resign(h, "quiet", token) == HAVEN_OK);
        usleep(300 * 1000); /* the thread ends by itself right after the callback */
        pthread_mutex_lock(&c.mutex);
        CHECK(c.cancelled == 1 && c.after == 0 && c.self == NULL);
        pthread_mutex_unlock(&c.mutex);
        pthread_mutex_destroy(&c.mutex);
    }

    /* Bad input changes nothing. */
    CHECK(haven_campaign(h, NULL, "leader", K("x"), -1, &other) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_campaign(h, s1, NULL, K("x"), -1, &other) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_campaign(h, s1, "leader", K("x"), -5, &other) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_campaign(h, s1, "leader", K("x"), -1, NULL) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_campaign(h, s1, "leader", NULL, 3, -1, &other) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_leader(h, "leader", &value, NULL, NULL, NULL) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(other == 77 && value.data == NULL);
    CHECK(leader_is(h, "two", second.token, id2));

    CHECK(haven_resign(h, "leader", second.token) == HAVEN_OK);
    CHECK(haven_session_revoke(s1) == HAVEN_OK && haven_session_revoke(s2) == HAVEN_OK);
    haven_session_free(s1);
    haven_session_free(s2);
    pthread_mutex_destroy(&o.mutex);
    pthread_cond_destroy(&o.changed);
}

/* ----- partition map ----- */

static void test_owners(haven_t *h) {
    haven_buf_t owners = {0};
    haven_record_t record;
    uint64_t epoch = 0, epoch2 = 0;
    uint32_t partition = 99, partition2 = 98;
    size_t offset = 0, count = 0;

    CHECK(haven_map_create(h, "shards", 8, 2) == HAVEN_OK);
    CHECK(haven_map_join(h, "shards", "node-a", 1) == HAVEN_OK);
    CHECK(haven_map_join(h, "shards", "node-b", 1) == HAVEN_OK);
    CHECK(haven_map_join(h, "shards", "node-c", 2) == HAVEN_OK);
    CHECK(haven_owners(h, "shards", K("user/42"), &epoch, &partition, &owners) == HAVEN_OK);
    CHECK(epoch >= 4 && partition < 8);
    while (offset < owners.len) {
        CHECK(haven_record_next(&owners, &offset, &record) == HAVEN_OK);
        CHECK(record.has_value == 0 && record.key_len == 6 &&
              memcmp(record.key, "node-", 5) == 0);
        count++;
    }
    CHECK(count == 2);
    haven_buf_free(&owners);
    CHECK(haven_partition_of(h, "shards", K("user/42"), &epoch2, &partition2) == HAVEN_OK);
    CHECK(epoch2 == epoch && partition2 == partition);
    CHECK(haven_owners(h, "no-such-map", K("user/42"), &epoch, NULL, &owners) ==
          HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(owners.data == NULL && epoch2 == epoch);
    CHECK(haven_owners(h, NULL, K("user/42"), NULL, NULL, &owners) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_map_leave(h, "shards", "node-c") == HAVEN_OK);
    CHECK(haven_owners(h, "shards", K("user/42"), &epoch2, NULL, &owners) == HAVEN_OK);
    CHECK(epoch2 > epoch);
    haven_buf_free(&owners);
}

static void test_remote(const char *address, haven_t *member) {
    haven_t *client = NULL;
    haven_options_t options;
    haven_buf_t addr = {0};
    CHECK(haven_connect(address, SECRET "\n", &client) == HAVEN_OK);
    if (client != NULL) {
        /* The same functions work on a remote client. */
        CHECK(value_is(client, "a/3", "tres"));
        CHECK(haven_put(client, K("r/1"), K("remote")) == HAVEN_OK);
        CHECK(value_is(member, "r/1", "remote"));
        CHECK(haven_local_addr(client, &addr) == HAVEN_ERR_INVALID_ARGUMENT);
        haven_close(client);
    }
    client = NULL;
    CHECK(haven_connect(address, "the wrong secret, long enough", &client) == HAVEN_ERR_AUTH);
    CHECK(client == NULL);
    CHECK(haven_options_init(&options) == HAVEN_OK && options.cluster_id == 1);
    options.cluster_id = 2;
    options.connect_timeout_ms = 2000;
    CHECK(haven_connect_with(address, SECRET, &options, &client) == HAVEN_ERR_AUTH);
    /* A caller built against the first header (no TLS fields) is still accepted. */
    options.struct_size = offsetof(haven_options_t, tls_ca);
    CHECK(haven_connect_with(address, SECRET, &options, &client) == HAVEN_ERR_AUTH);
    /* TLS files that do not exist: nothing is connected. */
    CHECK(haven_options_init(&options) == HAVEN_OK && options.tls_ca == NULL);
    options.tls_ca = "/nonexistent/ca.pem";
    CHECK(haven_connect_with(address, SECRET, &options, &client) == HAVEN_ERR_IO);
    options.tls_ca = NULL;
    options.tls_cert = "/nonexistent/cert.pem";
    CHECK(haven_connect_with(address, SECRET, &options, &client) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(client == NULL);
    options.struct_size = 1;
    CHECK(haven_connect_with(address, SECRET, &options, &client) == HAVEN_ERR_INVALID_ARGUMENT);
    CHECK(haven_connect("", SECRET, &client) == HAVEN_ERR_INVALID_ARGUMENT);
}

int main(int argc, char **argv) {
    char dir_template[] = "/tmp/haven-ctest-XXXXXX";
    const char *dir = mkdtemp(dir_template);
    char listen[64], peers[80], data_dir[512], command[600];
    haven_config_t *cfg = NULL;
    haven_t *h = NULL;
    haven_buf_t addr = {0};
    (void)argc;
    (void)argv;
    if (dir == NULL) {
        perror("mkdtemp");
        return 2;
    }
    test_versions_and_errors();
    test_config_errors();

    CHECK(haven_set_log_callback(on_log, &log_events, HAVEN_LOG_INFO) == HAVEN_OK);
    snprintf(listen, sizeof listen, "127.0.0.1:%d", free_port());
    snprintf(peers, sizeof peers, "1=%s", listen);
    snprintf(data_dir, sizeof data_dir, "%s/member", dir);
    CHECK(haven_config_new(&cfg) == HAVEN_OK);
    CHECK(haven_config_set(cfg, "id", "1") == HAVEN_OK);
    CHECK(haven_config_set(cfg, "listen", listen) == HAVEN_OK);
    CHECK(haven_config_set(cfg, "peers", peers) == HAVEN_OK);
    CHECK(haven_config_set(cfg, "data_dir", data_dir) == HAVEN_OK);
    CHECK(haven_config_set(cfg, "secret", SECRET) == HAVEN_OK);
    /* Valgrind runs everything many times slower. */
    CHECK(haven_config_set(cfg, "request_timeout_ms", "60000") == HAVEN_OK);
    CHECK(haven_config_set(cfg, "state_cache_bytes", "8388608") == HAVEN_OK);
    CHECK(haven_config_set(cfg, "wal_cache_bytes", "4194304") == HAVEN_OK);
    CHECK(haven_open(cfg, &h) == HAVEN_OK);
    haven_config_free(cfg);
    if (h == NULL) {
        fprintf(stderr, "cannot open the member: %s\n", haven_last_error());
        return 1;
    }
    CHECK(haven_local_addr(h, &addr) == HAVEN_OK && addr.len == strlen(listen) &&
          memcmp(addr.data, listen, addr.len) == 0);
    haven_buf_free(&addr);

    test_kv(h);
    test_scan_and_txn(h);
    test_status(h);
    test_sessions_and_locks(h);
    test_watch(h);
    test_elections(h);
    test_owners(h);
    test_remote(listen, h);

    CHECK(haven_close_status(h) == HAVEN_OK);
    pthread_mutex_lock(&log_mutex);
    CHECK(log_events > 0);
    pthread_mutex_unlock(&log_mutex);
    CHECK(haven_set_log_callback(NULL, NULL, HAVEN_LOG_WARN) == HAVEN_OK);

    snprintf(command, sizeof command, "rm -rf '%s'", dir);
    if (system(command) != 0) {
        failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
