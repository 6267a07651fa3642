/* bench/ok.c: the program tcpserver runs per connection in bench/run. Writes "ok\n" to the
 * socket (its standard output) and exits. bench/run links it statically so that its own
 * start-up costs as little as possible and the numbers show tcpserver's cost. */
#include <unistd.h>

int main(void) {
    return write(1, "ok\n", 3) == 3 ? 0 : 111;
}
