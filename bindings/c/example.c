/* A 3-member haven cluster inside one process: put, get, compare-and-swap, a lock.
 *
 *   cc -std=c99 -I include bindings/c/example.c -L target/release -lhaven -o example
 *   LD_LIBRARY_PATH=target/release ./example
 */
#define _POSIX_C_SOURCE 200809L
#include "haven.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MEMBERS 3

static void check(int rc, const char *what) {
    if (rc != HAVEN_OK) {
        fprintf(stderr, "%s: %s: %s\n", what, haven_code_name(rc), haven_last_error());
        exit(1);
    }
}

/* A free loopback port (bound and released: a collision is possible but rare). */
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
        exit(1);
    }
    close(fd);
    return ntohs(addr.sin_port);
}

/* The README's C example is this function's marked part (tests/ffi_header.rs checks it). */
static int demo(haven_t *a, haven_t *b, haven_t *c) {
    /* README:begin */
    /* Any member (or a remote client from haven_connect) serves any request. */
    const uint8_t *key = (const uint8_t *)"config/mode";
    haven_buf_t value = {0};
    int found = 0, swapped = 0;
    haven_session_t *session = NULL;
    uint64_t token = 0;

    check(haven_put(a, key, 11, (const uint8_t *)"fast", 4), "put");
    check(haven_get(b, key, 11, &value, &found), "get");
    printf("get: %.*s\n", (int)value.len, (const char *)value.data);
    haven_buf_free(&value);
    check(haven_cas(c, key, 11, (const uint8_t *)"fast", 4, 0, (const uint8_t *)"safe", 4,
                    &swapped),
          "cas");
    printf("cas fast->safe: %s\n", swapped ? "swapped" : "not swapped");

    /* A lock is held through a session (a lease kept alive in the background). */
    check(haven_session_grant(a, 10000, &session), "session");
    check(haven_lock(a, session, "backup", HAVEN_LOCK_EXCLUSIVE, 5000, &token), "lock");
    printf("lock backup: token %llu\n", (unsigned long long)token);
    check(haven_unlock(a, session, "backup", token), "unlock");

    /* Lead election "scheduler" (waiting up to 5 s), publish a new value, read it, resign. */
    check(haven_campaign(a, session, "scheduler", (const uint8_t *)"10.0.0.7", 8, 5000, &token),
          "campaign");
    check(haven_proclaim(b, "scheduler", token, (const uint8_t *)"10.0.0.8", 8), "proclaim");
    check(haven_leader(c, "scheduler", &value, NULL, NULL, &found), "leader");
    printf("leader: %.*s\n", (int)value.len, (const char *)value.data);
    haven_buf_free(&value);
    check(haven_resign(a, "scheduler", token), "resign");
    haven_session_free(session);
    /* README:end */
    return found && swapped ? 0 : 1;
}

int main(void) {
    char dir_template[] = "/tmp/haven-example-XXXXXX";
    const char *dir = mkdtemp(dir_template);
    int ports[MEMBERS];
    char peers[256] = "";
    haven_t *members[MEMBERS];
    int i;

    if (dir == NULL) {
        perror("mkdtemp");
        return 1;
    }
    for (i = 0; i < MEMBERS; i++) {
        char item[64];
        ports[i] = free_port();
        snprintf(item, sizeof item, "%s%d=127.0.0.1:%d", i ? "," : "", i + 1, ports[i]);
        strcat(peers, item);
    }
    for (i = 0; i < MEMBERS; i++) {
        haven_config_t *cfg = NULL;
        char id[16], listen[64], data_dir[512];
        snprintf(id, sizeof id, "%d", i + 1);
        snprintf(listen, sizeof listen, "127.0.0.1:%d", ports[i]);
        snprintf(data_dir, sizeof data_dir, "%s/member-%d", dir, i + 1);
        check(haven_config_new(&cfg), "config");
        check(haven_config_set(cfg, "id", id), "id");
        check(haven_config_set(cfg, "listen", listen), "listen");
        check(haven_config_set(cfg, "peers", peers), "peers");
        check(haven_config_set(cfg, "data_dir", data_dir), "data_dir");
        check(haven_config_set(cfg, "secret", "sixteen or more bytes of secret\n"), "secret");
        check(haven_open(cfg, &members[i]), "open");
        haven_config_free(cfg);
    }

    if (demo(members[0], members[1], members[2]) != 0) {
        return 1;
    }

    for (i = 0; i < MEMBERS; i++) {
        haven_close(members[i]);
    }
    {
        char command[600];
        snprintf(command, sizeof command, "rm -rf '%s'", dir);
        if (system(command) != 0) {
            return 1;
        }
    }
    return 0;
}
