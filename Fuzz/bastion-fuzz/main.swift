// bastion-fuzz HARNESS [libFuzzer options] [corpus folders or files]
//
// One libFuzzer executable for every harness of FuzzHarnesses (built only by scripts/fuzz,
// with -sanitize=fuzzer,address): the first argument picks the harness, the rest goes to
// libFuzzer unchanged. SwiftPM links an executable's entry point as `main`, so a harness that
// only defined LLVMFuzzerTestOneInput would run libFuzzer's main on nothing: this one calls
// LLVMFuzzerRunDriver itself.
#if canImport(Glibc)
import Glibc
#endif
import CFuzzer
import FuzzHarnesses
import GatewayKit

nonisolated(unsafe) var selected: Harnesses.Harness?

let arguments = CommandLine.arguments
guard arguments.count >= 2, let harness = Harnesses.named(arguments[1]) else {
    var usage = "usage: bastion-fuzz HARNESS [libFuzzer options] [corpus...]\nharnesses:\n"
    for h in Harnesses.all { usage += "  \(h.name)  \(h.summary)\n" }
    try? FD.writeAll(2, usage)
    exit(arguments.count >= 2 && arguments[1] == "--list" ? 0 : 2)
}
selected = harness

var argv: [UnsafeMutablePointer<CChar>?] = ([arguments[0]] + arguments.dropFirst(2)).map { strdup($0) } + [nil]
var argc = Int32(argv.count - 1)
let status = argv.withUnsafeMutableBufferPointer { buffer -> Int32 in
    var base = buffer.baseAddress
    return LLVMFuzzerRunDriver(&argc, &base) { data, size in
        selected!.run(UnsafeRawBufferPointer(start: data, count: size))
        return 0
    }
}
exit(status)
