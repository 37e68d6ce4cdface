/* benches/ffi.rs: haven_get_with(HAVEN_READ_STALE) of one key through the C ABI, ops/s.
 * Usage: ffi_get DATA_DIR PORT SECONDS */
#define _POSIX_C_SOURCE 200809L
#include "haven.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void check(int rc, const char *what) {
    if (rc != HAVEN_OK) {
        fprintf(stderr, "%s: %s: %s\n", what, haven_code_name(rc), haven_last_error());
        exit(1);
    }
}

int main(int argc, char **argv) {
    char listen[64], peers[80];
    haven_config_t *cfg = NULL;
    haven_t *h = NULL;
    const uint8_t *key = (const uint8_t *)"bench/key";
    uint8_t value[100];
    double seconds, start, elapsed;
    long ops = 0;
    if (argc != 4) {
        fprintf(stderr, "usage: ffi_get DATA_DIR PORT SECONDS\n");
        return 2;
    }
    seconds = atof(argv[3]);
    snprintf(listen, sizeof listen, "127.0.0.1:%s", argv[2]);
    snprintf(peers, sizeof peers, "1=%s", listen);
    check(haven_config_new(&cfg), "config");
    check(haven_config_set(cfg, "id", "1"), "id");
    check(haven_config_set(cfg, "listen", listen), "listen");
    check(haven_config_set(cfg, "peers", peers), "peers");
    check(haven_config_set(cfg, "data_dir", argv[1]), "data_dir");
    check(haven_config_set(cfg, "secret", "sixteen or more bytes of secret"), "secret");
    check(haven_open(cfg, &h), "open");
    haven_config_free(cfg);
    memset(value, 'v', sizeof value);
    check(haven_put(h, key, 9, value, sizeof value), "put");

    start = now();
    do {
        int i;
        for (i = 0; i < 1000; i++) {
            haven_buf_t got = {NULL, 0};
            int found = 0;
            check(haven_get_with(h, HAVEN_READ_STALE, key, 9, &got, &found), "get");
            if (!found || got.len != sizeof value) {
                fprintf(stderr, "wrong value\n");
                return 1;
            }
            haven_buf_free(&got);
        }
        ops += 1000;
        elapsed = now() - start;
    } while (elapsed < seconds);
    printf("%.0f\n", (double)ops / elapsed);
    haven_close(h);
    return 0;
}
