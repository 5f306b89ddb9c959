import Foundation

/// A terminal: a blocking TCP client that sends lines and reads lines, with
/// a receive timeout so a test can never hang.
final class TerminalClient: @unchecked Sendable {  // one thread may send while another reads
    let fd: Int32
    private var buffer: [UInt8] = []

    init(port: Int, receiveTimeout: TimeInterval = 10, sendTimeout: TimeInterval = 10) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket failed") }
        // Both directions bounded: a server that stops reading or answering
        // fails the test instead of hanging the run (XCTest has no per-test timeout).
        var receive = timeval(tv_sec: Int(receiveTimeout), tv_usec: Int(receiveTimeout.truncatingRemainder(dividingBy: 1) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &receive, socklen_t(MemoryLayout<timeval>.size))
        var send = timeval(tv_sec: Int(sendTimeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &send, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            close(fd)
            throw TestFailure("connect to \(port) failed: errno \(errno)")
        }
    }

    deinit { close(fd) }

    func send(_ text: String) throws {
        try send(bytes: Array(text.utf8))
    }

    func send(bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard written > 0 else {
                throw TestFailure(errno == EAGAIN ? "send timed out: the server stopped reading" : "send failed: errno \(errno)")
            }
            offset += written
        }
    }

    func sendLine(_ line: String) throws {
        try send(line + "\n")
    }

    /// The next line, or nil when the server closed the connection.
    func readLine() throws -> String? {
        while true {
            if let newline = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<newline], as: UTF8.self)
                buffer.removeSubrange(...newline)
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 65_536)
            let count = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count == 0 { return nil }
            if count < 0 && errno == EINTR { continue }  // a signal (SIGCHLD of a child process) interrupted the wait
            guard count > 0 else { throw TestFailure("no answer from the server (errno \(errno))") }
            buffer.append(contentsOf: chunk[..<count])
        }
    }

    /// Sends one request and decodes its answer.
    func request(_ fields: [String: Any]) throws -> Response {
        try sendLine(Request.json(fields))
        guard let line = try readLine() else { throw TestFailure("connection closed before the answer") }
        return try Response(line: line)
    }

    func readResponse() throws -> Response {
        guard let line = try readLine() else { throw TestFailure("connection closed before the answer") }
        return try Response(line: line)
    }

    /// Half-closes (the terminal is done sending).
    func finishSending() {
        shutdown(fd, Int32(SHUT_WR))
    }
}

enum Request {
    static func json(_ fields: [String: Any]) -> String {
        let data = try! JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    static func line(id: String? = nil, account: String, amount: String, mcc: String, merchant: String = "PADARIA DO ZE") -> String {
        var text = "{"
        if let id { text += "\"id\":\"\(id)\"," }
        text += "\"account\":\"\(account)\",\"totalAmount\":\(amount),\"mcc\":\"\(mcc)\",\"merchant\":\"\(merchant)\"}"
        return text
    }

    /// A reversal line; `extra` adds optional fields (totalAmount, mcc, merchant).
    static func reversal(id: String, account: String, original: String, _ extra: [String: Any] = [:]) -> String {
        json(["type": "reversal", "id": id, "account": account, "original": original].merging(extra) { $1 })
    }

    /// A balance inquiry line.
    static func balance(id: String, account: String) -> String {
        json(["type": "balance", "id": id, "account": account])
    }
}

struct Response: Equatable {
    let id: String?
    let code: String
    let reason: String?
    /// The machine-readable reason of a 07.
    let reasonCode: String?
    /// A balance inquiry's answer: category -> amount as sent ("1000.00").
    let balances: [String: String]?

    init(line: String) throws {
        guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
              let code = object["code"] as? String else {
            throw TestFailure("not a response: \(line)")
        }
        self.id = object["id"] as? String
        self.code = code
        self.reason = object["reason"] as? String
        self.reasonCode = object["reasonCode"] as? String
        self.balances = object["balances"] as? [String: String]
    }
}
