import GatewayKit
import Testing

@Suite("systemd's environment")
struct SystemdTests {
    func parse(_ variables: [String: String], pid: Int32 = 42) -> Systemd.Environment {
        Systemd.Environment.parse(value: { variables[$0].map { Array($0.utf8) } }, pid: pid)
    }

    @Test func socketsArePassedOnlyToTheProcessNamed() {
        #expect(parse(["LISTEN_PID": "42", "LISTEN_FDS": "2"]).listenFDs == [3, 4])
        #expect(parse(["LISTEN_PID": "43", "LISTEN_FDS": "2"]).listenFDs == [])
        #expect(parse(["LISTEN_FDS": "2"]).listenFDs == [], "no LISTEN_PID: not for us")
        for bad in ["", "0", "-1", "2x", "99999999999999999999", "1025"] {
            #expect(parse(["LISTEN_PID": "42", "LISTEN_FDS": bad]).listenFDs == [], "\(bad)")
        }
        #expect(parse(["LISTEN_PID": "+42", "LISTEN_FDS": "1"]).listenFDs == [])
    }

    @Test func theNotifySocketIsAPathOrAnAbstractName() {
        #expect(parse(["NOTIFY_SOCKET": "/run/systemd/notify"]).notifySocket == Array("/run/systemd/notify".utf8))
        #expect(parse(["NOTIFY_SOCKET": "@/org/freedesktop/notify"]).notifySocket?.first == UInt8(ascii: "@"))
        #expect(parse(["NOTIFY_SOCKET": "@"]).notifySocket == nil)
        #expect(parse(["NOTIFY_SOCKET": ""]).notifySocket == nil)
        #expect(parse([:]) == Systemd.Environment())
    }

    @Test func theWatchdogIsOursWhenItsPidIsUnsetOrOurs() {
        #expect(parse(["WATCHDOG_USEC": "2000000"]).watchdog == .seconds(2))
        #expect(parse(["WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "42"]).watchdog == .seconds(2))
        #expect(parse(["WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7"]).watchdog == nil)
        #expect(parse(["WATCHDOG_USEC": "0"]).watchdog == nil)
        #expect(parse(["WATCHDOG_USEC": "soon"]).watchdog == nil)
    }
}
