// Default options for sanitizer builds (scripts/test --sanitize address|thread). A tool's
// environment is not the test's (tcpserver and tcpproxy prepare their programs' environments,
// the tests start tools with environments of their own), so ASAN_OPTIONS would not reach
// every process: the options are built in. Reports go to files in /tmp/bastion-sanitizer/
// (created by scripts/test, which counts them at the end) rather than to a stderr that may be
// a client's socket or a log. Leaks are left to the leak check: a process that exits on a
// failed exec keeps what it prepared for it, on purpose.
//
// The runtimes look these functions up by name; in an ordinary build nothing calls them.

const char *__asan_default_options(void);
const char *__tsan_default_options(void);

const char *__asan_default_options(void) {
    return "detect_leaks=0:log_path=/tmp/bastion-sanitizer/asan:log_exe_name=1";
}

const char *__tsan_default_options(void) {
    // die_after_fork=0: tcpproxy's master has its log writer threads when it forks its
    // per-user workers, which start threads of their own (safe here: the log's fork handlers
    // hold its locks across the fork and release them on both sides), and ThreadSanitizer
    // would otherwise kill every worker.
    return "log_path=/tmp/bastion-sanitizer/tsan:log_exe_name=1:second_deadlock_stack=1:die_after_fork=0";
}
