#if canImport(Glibc)
import Glibc
#endif
import GatewayKit
import TCPProxy
import Testing

/// A file in a fresh temporary directory, removed by `remove()`.
struct TemporaryFile {
    let directory: String
    let path: String

    init(name: String, contents: String) {
        var template = Array("/tmp/tcpproxy-conf-XXXXXX".utf8CString)
        directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
        path = directory + "/" + name
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        try? FD.writeAll(fd, contents)
        FD.close(fd)
    }

    func remove() {
        unlink(path)
        rmdir(directory)
    }
}

@Suite("Loading configuration files")
struct LoadingTests {
    @Test func defaultPath() {
        #expect(ProxyConfiguration.defaultPath == "/etc/tcpproxy.conf")
    }

    @Test func loadsAFileWithServicesFromAFile() throws {
        let services = TemporaryFile(name: "services", contents: "smtp 25/tcp mail\nnntp 119/tcp\n")
        let file = TemporaryFile(name: "tcpproxy.conf", contents: "port mail\nserver relay:nntp\n")
        defer {
            services.remove()
            file.remove()
        }
        let configuration = try ProxyConfiguration.load(from: file.path, serviceNames: .file(services.path))
        #expect(configuration.path == file.path)
        #expect(
            configuration.services == [
                ProxyService(
                    port: 25,
                    handlers: [
                        ProxyHandler(target: .forward(host: "relay", port: 119), line: 1)
                    ], line: 1)
            ])
    }

    @Test func messagesNameTheFileAndServicesFile() {
        let file = TemporaryFile(name: "proxy.conf", contents: "port 25\nserver relay:nosuch\n")
        defer { file.remove() }
        do {
            _ = try ProxyConfiguration.load(from: file.path, serviceNames: .file("/nonexistent/services"))
            Issue.record("parsed")
        } catch {
            #expect(
                error.description == "\(file.path):2: unknown service \"nosuch\" "
                    + "(expected a port number 1-65535 or a tcp service in /nonexistent/services)")
        }
    }

    @Test func unreadable() {
        do {
            _ = try ProxyConfiguration.load(from: "/nonexistent/tcpproxy.conf", serviceNames: fakeServices)
            Issue.record("parsed")
        } catch {
            #expect(error.description == "unable to read /nonexistent/tcpproxy.conf: file does not exist")
            #expect(
                error
                    == ConfigurationError(
                        path: "/nonexistent/tcpproxy.conf", line: nil,
                        problem: .unreadable(SystemError(errno: ENOENT))))
        }
        do {
            _ = try ProxyConfiguration.load(from: "/tmp", serviceNames: fakeServices)
            Issue.record("parsed")
        } catch {
            #expect(error.description == "unable to read /tmp: is a directory")
        }
    }

    @Test func largeFile() throws {
        let text = (1...5000).map { "port \(10000 + $0)\ninterface 10.0.\($0 / 256).\($0 % 256)\nserver h\($0)\n" }
            .joined()
        let file = TemporaryFile(name: "big.conf", contents: text)
        defer { file.remove() }
        let configuration = try ProxyConfiguration.load(from: file.path, serviceNames: fakeServices)
        #expect(configuration.services.count == 5000)
        #expect(configuration.services.last?.handlers.first?.target == .forward(host: "h5000", port: nil))
    }

    @Test func bytesThatAreNotUTF8() throws {
        var text = Array("port 25\nserver a\nlogname x".utf8)
        text += [0xff, 0xfe]
        let configuration = try ProxyConfiguration(parsing: text, path: "/x", serviceNames: fakeServices)
        #expect(configuration.services[0].handlers[0].target == .forward(host: "a", port: nil))
    }
}
