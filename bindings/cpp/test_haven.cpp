// The C++ binding's test: one member in this process, every wrapper, errors as exceptions.
// Prints "N passed, N failed"; exits non-zero on failure.
#include "haven.hpp"

#include <arpa/inet.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <netinet/in.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

static int passed, failed;

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (cond) {                                                                     \
            passed++;                                                                   \
        } else {                                                                        \
            failed++;                                                                   \
            std::fprintf(stderr, "FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond);      \
        }                                                                               \
    } while (0)

static int free_port() {
    sockaddr_in addr{};
    socklen_t len = sizeof addr;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr) != 0 ||
        getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &len) != 0) {
        std::perror("free_port");
        std::exit(2);
    }
    close(fd);
    return ntohs(addr.sin_port);
}

template <typename F> static int code_of(F f) {
    try {
        f();
    } catch (const haven::error &e) {
        return e.code();
    }
    return HAVEN_OK;
}

int main() {
    char dir_template[] = "/tmp/haven-cpptest-XXXXXX";
    const char *dir = mkdtemp(dir_template);
    if (dir == nullptr) {
        return 2;
    }
    std::string listen = "127.0.0.1:" + std::to_string(free_port());
    const std::string secret = "sixteen or more bytes of secret";

    CHECK(code_of([] { haven::config().set("colour", "blue"); }) == HAVEN_ERR_INVALID_ARGUMENT);
    try {
        haven::config().set("id", "one");
        CHECK(false);
    } catch (const haven::error &e) {
        CHECK(std::string(e.name()) == "HAVEN_ERR_INVALID_ARGUMENT");
        CHECK(std::string(e.what()).find("id") != std::string::npos);
    }

    {
        haven::config cfg;
        cfg.set("id", "1")
            .set("listen", listen)
            .set("peers", "1=" + listen)
            .set("data_dir", std::string(dir) + "/member")
            .set("secret", secret);
        haven::db db = haven::db::open(cfg);

        db.put("a/1", "one");
        CHECK(db.get("a/1") == std::optional<std::string>("one"));
        CHECK(!db.get("missing").has_value());
        CHECK(db.get("a/1", true) == std::optional<std::string>("one"));
        CHECK(!db.cas("a/1", std::string_view("two"), "x"));
        CHECK(db.cas("a/1", std::string_view("one"), "uno"));
        CHECK(db.cas("a/2", std::nullopt, "dos"));
        CHECK(!db.cas("a/2", std::nullopt, "again"));
        db.put(std::string_view("bin\0key", 7), std::string_view("v\0v", 3));
        CHECK(db.get(std::string_view("bin\0key", 7)) == std::optional<std::string>(std::string("v\0v", 3)));

        std::vector<haven::entry> entries = db.scan("a/");
        CHECK(entries.size() == 2);
        CHECK(entries.size() == 2 && entries[0].key == "a/1" && entries[0].value == "uno");
        CHECK(entries.size() == 2 && entries[1].key == "a/2" && entries[1].value == "dos");
        CHECK(db.remove("a/2"));
        CHECK(!db.remove("a/2"));

        std::string big(4097, 'k');
        CHECK(code_of([&] { db.put(big, "v"); }) == HAVEN_ERR_INVALID_ARGUMENT);
        CHECK(code_of([&] { db.put("", "v"); }) == HAVEN_ERR_INVALID_ARGUMENT);
        CHECK(db.status_json().find("\"role\":\"leader\"") != std::string::npos);

        // One handle, many threads.
        std::vector<std::thread> threads;
        for (int t = 0; t < 4; t++) {
            threads.emplace_back([&db, t] {
                for (int i = 0; i < 20; i++) {
                    db.put("t/" + std::to_string(t) + "/" + std::to_string(i), "x");
                }
            });
        }
        for (auto &t : threads) {
            t.join();
        }
        CHECK(db.scan("t/").size() == 80);

        {
            haven::db remote = haven::db::connect(listen, secret + "\n");
            CHECK(remote.get("a/1") == std::optional<std::string>("uno"));
            haven::db moved = std::move(remote);
            CHECK(moved.get("a/1") == std::optional<std::string>("uno"));
        }
        CHECK(code_of([&] { haven::db::connect(listen, "a wrong secret of some length"); }) ==
              HAVEN_ERR_AUTH);
        db.close();
    }

    std::string command = std::string("rm -rf '") + dir + "'";
    if (std::system(command.c_str()) != 0) {
        failed++;
    }
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
