/* The C test program: every part of the C ABI that exists, against one member in this
 * process and a remote client connected to it. Run under valgrind by tests/ffi_c.rs.
 * Prints one line per check and "N passed, N failed" at the end; exits non-zero on failure. */
#define _POSIX_C_SOURCE 200809L
#include "haven.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
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
