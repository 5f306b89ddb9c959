import Foundation
import XCTest

/// `authorizer send` against a real `serve`: what it prints, its exit status
/// (0 approved, 1 declined, 2 transport or usage), and lines from stdin
/// pipelined on one connection.
final class SendCommandTests: IntegrationTestCase {
    private var target: String { "127.0.0.1:\(serve.port)" }

    private func send(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try runAuthorizer(["send", "--target", target] + arguments, expectSuccess: false)
    }

    /// `send` reading `input` on stdin; returns the status and what it printed.
    private func sendStdin(_ input: String, arguments: [String] = [], environment: [String: String]? = nil) throws -> (status: Int32, output: String) {
        let child = ChildProcess(name: "send", executable: TestEnvironment.authorizerBinary, arguments: ["send"] + arguments, environment: environment)
        try child.start()
        child.write(input)
        child.closeInput()
        guard let status = child.waitForExit(timeout: 30) else {
            child.terminate(signal: SIGKILL)
            throw TestFailure("send did not exit:\n\(child.output)")
        }
        return (status, child.output)
    }

    private func answerLines(_ output: String) -> [String] {
        output.split(separator: "\n").map(String.init).filter { $0.hasPrefix("{") }
    }

    func testApprovedRequestFromFlagsExitsZeroAndDebitsTheExactAmount() throws {
        try account("123", ["FOOD": 100_000, "MEAL": 100_000, "CASH": 100_000])
        let result = try send(["--account", "123", "--amount", "100.10", "--mcc", "5811", "--merchant", "PADARIA DO ZE", "--id", "s1"])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertEqual(answerLines(result.output), [#"{"id":"s1","code":"00"}"#], result.output)
        XCTAssertEqual(try redis.balances("123")["MEAL"], 100_000 - 10_010, "100.10 sent as typed: 10010 cents from MEAL")
    }

    func testQuotesAndBackslashesInTheMerchantAreEscaped() throws {
        try account("esc", ["CASH": 10_000])
        let merchant = #"BAR "DO" ZE \ SP"#
        let result = try send(["--account", "esc", "--amount", "1", "--mcc", "5999", "--merchant", merchant, "--id", "e1"])
        XCTAssertEqual(result.status, 0, result.output)
        let statement = try XCTUnwrap(try redis.statements().last)
        XCTAssertEqual(statement["merchant"], merchant, "the descriptor arrives intact")
        XCTAssertEqual(statement["amount"], "100")
    }

    func testDeclinedAndRejectedExitOne() throws {
        try account("poor", ["FOOD": 500, "CASH": 0])
        let declined = try send(["--account", "poor", "--amount", "10.00", "--mcc", "5411", "--merchant", "MERCADO", "--id", "d1"])
        XCTAssertEqual(declined.status, 1, declined.output)
        XCTAssertEqual(answerLines(declined.output), [#"{"id":"d1","code":"51"}"#])

        let unknown = try send(["--account", "nobody", "--amount", "1.00", "--mcc", "5411", "--merchant", "MERCADO", "--id", "d2"])
        XCTAssertEqual(unknown.status, 1, unknown.output)
        XCTAssertTrue(unknown.output.contains(#""code":"07""#), unknown.output)
    }

    func testABadAmountIsRefusedLocallyWithStatusTwo() throws {
        try account("123", ["FOOD": 100_000])
        for amount in ["1e3", "100.123", "-5", "10,50", "0"] {
            let result = try send(["--account", "123", "--amount=\(amount)", "--mcc", "5411", "--merchant", "MERCADO"])
            XCTAssertEqual(result.status, 2, "\(amount): \(result.output)")
            XCTAssertTrue(result.output.contains("--amount"), result.output)
        }
        XCTAssertEqual(try redis.command("XLEN", "statements").int, 0, "nothing reached the server")
    }

    func testConnectionRefusedExitsTwo() throws {
        let port = try TestEnvironment.freePort()
        let result = try runAuthorizer(
            ["send", "--target", "127.0.0.1:\(port)", "--account", "123", "--amount", "1", "--mcc", "5411", "--merchant", "M"],
            expectSuccess: false
        )
        XCTAssertEqual(result.status, 2, result.output)
        XCTAssertTrue(result.output.contains("cannot connect"), result.output)
    }

    func testAServerThatNeverAnswersTimesOutWithStatusTwo() throws {
        // A socket that accepts connections (in the kernel's backlog) and never answers.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        XCTAssertEqual(bound, 0)
        XCTAssertEqual(listen(fd, 8), 0)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        let port = Int(UInt16(bigEndian: address.sin_port))
        let started = Date()
        let result = try runAuthorizer(
            ["send", "--target", "127.0.0.1:\(port)", "--timeout-ms", "300", "--account", "123", "--amount", "1", "--mcc", "5411", "--merchant", "M"],
            expectSuccess: false
        )
        XCTAssertEqual(result.status, 2, result.output)
        XCTAssertTrue(result.output.contains("300 ms"), result.output)
        XCTAssertLessThan(Date().timeIntervalSince(started), 10, "bounded by --timeout-ms")
    }

    func testLinesFromStdinArePipelinedAndAnsweredInOrder() throws {
        try account("p", ["FOOD": 10_000, "CASH": 0])
        let lines = [
            #"{"id":"p1","account":"p","totalAmount":30.00,"mcc":"5411","merchant":"MERCADO"}"#,
            #"{"id":"p2","account":"p","totalAmount":80.00,"mcc":"5411","merchant":"MERCADO"}"#,  // 51: 70.00 left
            #"{"id":"p3","account":"p","totalAmount":70.00,"mcc":"5411","merchant":"MERCADO"}"#,
            "",
            #"{"id":"p4","account":"p","totalAmount":"bad","mcc":"5411","merchant":"MERCADO"}"#,  // 07
        ]
        // The target from the environment this time.
        let result = try sendStdin(lines.joined(separator: "\n") + "\n", environment: ["AUTHORIZER_TARGET": target])
        XCTAssertEqual(result.status, 1, "one answer is not 00: \(result.output)")
        let answers = answerLines(result.output)
        XCTAssertEqual(answers.count, 4, result.output)
        XCTAssertEqual(answers.prefix(3), [#"{"id":"p1","code":"00"}"#, #"{"id":"p2","code":"51"}"#, #"{"id":"p3","code":"00"}"#])
        XCTAssertTrue(answers.last?.hasPrefix(#"{"id":"p4","code":"07""#) ?? false, result.output)
        XCTAssertEqual(try redis.balances("p")["FOOD"], 0)

        let approved = try sendStdin(
            #"{"id":"q1","account":"p","totalAmount":0.01,"mcc":"5411","merchant":"M"}"# + "\n", arguments: ["--target", target]
        )
        XCTAssertEqual(approved.status, 1, "FOOD is empty now: 51. \(approved.output)")
        try account("p", ["FOOD": 1])
        let again = try sendStdin(
            #"{"id":"q2","account":"p","totalAmount":0.01,"mcc":"5411","merchant":"M"}"# + "\r\n", arguments: ["--target", target]
        )
        XCTAssertEqual(again.status, 0, again.output)
    }

    func testRawLineAsAnArgument() throws {
        try account("r", ["MEAL": 1_000])
        let result = try send([#"{"id":"r1","account":"r","totalAmount":"5.5","mcc":"5811","merchant":"RESTAURANTE"}"#])
        XCTAssertEqual(result.status, 0, result.output)
        XCTAssertEqual(try redis.balances("r")["MEAL"], 450)
    }
}
