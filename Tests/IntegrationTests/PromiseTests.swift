import Foundation
import XCTest

/// Promises of the terminal protocol (docs/terminal-protocol.md) and of `serve` that each need
/// a test of their own: every test here fails when its promise breaks
/// (scripts/mutations.sh breaks each on purpose).
final class PromiseTests: IntegrationTestCase {
    // Requests wait on locks held by hand: a long SLA keeps the deadline out of the way.
    override var serveArguments: [String] { ["--sla-ms", "5000"] }

    private func line(_ id: String, _ account: String, _ amount: String = "1.00", mcc: String = "5411") -> String {
        Request.line(id: id, account: account, amount: amount, mcc: mcc)
    }

    /// A terminal that half-closes while its requests are still undecided
    /// gets every answer, then the server closes.
    func testHalfClosedTerminalGetsEveryAnswerThenTheServerCloses() throws {
        try account("hc", ["FOOD": 1_000])
        try redis.command("SET", "lock:{hc}", "held-by-hand")  // no TTL: undecided until the DEL
        let client = try serve.connect()
        try client.send((1...3).map { line("hc\($0)", "hc") + "\n" }.joined())
        try redis.waitUntilKeyeventSubscribers(1)
        client.finishSending()
        try redis.command("DEL", "lock:{hc}")
        for index in 1...3 {
            let answer = try client.readResponse()
            XCTAssertEqual(answer.id, "hc\(index)")
            XCTAssertEqual(answer.code, "00")
        }
        XCTAssertNil(try client.readLine(), "the server closes once everything is answered")
        XCTAssertEqual(try redis.balances("hc"), ["FOOD": 700])
    }

    /// SIGTERM: the listener closes at once (new terminals are refused)
    /// while a request already read is still answered; then exit 0.
    func testSigtermRefusesNewConnectionsAndAnswersWhatWasRead() throws {
        try account("st", ["FOOD": 1_000])
        try redis.command("SET", "lock:{st}", "held-by-hand")
        let client = try serve.connect()
        try client.sendLine(line("st1", "st"))
        try redis.waitUntilKeyeventSubscribers(1)
        serve.child.terminate(signal: SIGTERM)
        XCTAssertTrue(serve.child.waitForLine(containing: "shutting down"), serve.child.output)
        // The listener is closed before the log line's shutdown step returns;
        // poll the connect (no event tells a test that a socket closed).
        var refused = false
        let deadline = Date().addingTimeInterval(2)
        while !refused && Date() < deadline {
            refused = (try? serve.connect()) == nil
            if !refused { Thread.sleep(forTimeInterval: 0.01) }
        }
        XCTAssertTrue(refused, "a new terminal was still accepted after SIGTERM")
        try redis.command("DEL", "lock:{st}")
        XCTAssertEqual(try client.readResponse().code, "00")
        XCTAssertEqual(serve.child.waitForExit(timeout: 20), 0, serve.child.output)
        XCTAssertEqual(try redis.balances("st"), ["FOOD": 900])
    }

    /// `serve` on a Redis with no rules installs the defaults itself.
    func testServeInstallsTheDefaultRulesOnAnEmptyRedis() throws {
        serve = nil
        try redis.command("DEL", "rules:mcc", "rules:merchant", "rules:config")
        serve = try ServeProcess(redis: redis, arguments: serveArguments)
        XCTAssertEqual(try redis.command("HGET", "rules:mcc", "5811").string, "MEAL")
        XCTAssertEqual(try redis.command("HGET", "rules:merchant", "UBER EATS").string, "5812")
        XCTAssertEqual(try redis.command("HGET", "rules:config", "fallback").string, "CASH")
        try account("dr", ["FOOD": 1_000, "MEAL": 1_000, "CASH": 1_000])
        let client = try serve.connect()
        XCTAssertEqual(try client.request(["account": "dr", "totalAmount": 1, "mcc": "5811", "merchant": "M"]).code, "00")
        XCTAssertEqual(try redis.balances("dr"), ["FOOD": 1_000, "MEAL": 900, "CASH": 1_000])
    }

    /// A line of exactly 16 KiB whose `\r` and `\n` arrive in different reads
    /// is a valid line, not a line over the limit.
    func testA16KiBLineWithItsCRAndLFInDifferentReadsIsParsed() throws {
        try account("cr", ["FOOD": 1_000])
        let prefix = #"{"id":"cr1","account":"cr","totalAmount":1,"mcc":"5411","merchant":"M","pad":""#
        let suffix = #""}"#
        let line = prefix + String(repeating: "x", count: 16_384 - prefix.utf8.count - suffix.utf8.count) + suffix
        XCTAssertEqual(line.utf8.count, 16_384)
        let client = try serve.connect()
        try client.send(line + "\r")
        // No event tells a test that the server has read these bytes: the pause
        // only makes the split likely; the answer must be 00 either way.
        Thread.sleep(forTimeInterval: 0.2)
        try client.send("\n")
        let answer = try client.readResponse()
        XCTAssertEqual(answer.code, "00", answer.reason ?? "")
        XCTAssertEqual(answer.id, "cr1")
        XCTAssertEqual(try client.request(["account": "cr", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00", "the connection stays open")
        XCTAssertEqual(try redis.balances("cr"), ["FOOD": 800])
    }

    /// Transaction ids are per account: the same id on two accounts is two transactions.
    func testTheSameIdOnTwoAccountsIsTwoTransactions() throws {
        try account("one", ["FOOD": 1_000])
        try account("two", ["FOOD": 1_000])
        let client = try serve.connect()
        XCTAssertEqual(try client.request(["id": "shared", "account": "one", "totalAmount": 3, "mcc": "5411", "merchant": "M"]).code, "00")
        XCTAssertEqual(try client.request(["id": "shared", "account": "two", "totalAmount": 4, "mcc": "5411", "merchant": "M"]).code, "00")
        XCTAssertEqual(try redis.balances("one"), ["FOOD": 700])
        XCTAssertEqual(try redis.balances("two"), ["FOOD": 600])
        XCTAssertEqual(try redis.statements().count, 2)
    }

    /// A repeat sent while the first is still undecided (same connection and
    /// another connection) gets the first decision and debits nothing.
    func testADuplicateArrivingWhileTheFirstIsInFlightDebitsOnce() throws {
        try account("dup", ["FOOD": 1_000])
        try redis.command("SET", "lock:{dup}", "held-by-hand")
        let first = try serve.connect()
        let second = try serve.connect()
        try first.send(line("d1", "dup", "6.00") + "\n" + line("d1", "dup", "6.00") + "\n")
        try second.sendLine(line("d1", "dup", "6.00"))
        try redis.waitUntilKeyeventSubscribers(1)
        try redis.command("DEL", "lock:{dup}")
        XCTAssertEqual(try first.readResponse().code, "00")
        XCTAssertEqual(try first.readResponse().code, "00")
        XCTAssertEqual(try second.readResponse().code, "00")
        XCTAssertEqual(try redis.balances("dup"), ["FOOD": 400])
        XCTAssertEqual(try redis.statements().count, 1)
    }

    /// Past 1024 unanswered requests a connection is not read until answers
    /// drain: a request queued behind them is not even seen by Redis.
    func testPastTheInFlightLimitTheConnectionIsNotRead() throws {
        try account("bp1", ["FOOD": 200_000])
        try account("bp2", ["FOOD": 200_000])
        try account("bpfree", ["FOOD": 1_000])
        try redis.command("SET", "lock:{bp1}", "held-by-hand")
        try redis.command("SET", "lock:{bp2}", "held-by-hand")
        let client = try serve.connect(receiveTimeout: 30)
        // Twice the limit, then one request for a free account: a read may hold
        // more than one line, so the server takes in a little past 1024, never 2024.
        let held = 2_024
        var batch = ""
        for index in 0..<held { batch += line("bp-\(index)", index % 2 == 0 ? "bp1" : "bp2") + "\n" }
        batch += line("bp-free", "bpfree") + "\n"
        // Sent from another thread: once the server stops reading, the send
        // blocks until the answers drain.
        let sent = DispatchSemaphore(value: 0)
        let sendError = NSLock()
        nonisolated(unsafe) var failure: Error?
        let payload = batch
        DispatchQueue.global().async {
            do { try client.send(payload) } catch { sendError.lock(); failure = error; sendError.unlock() }
            sent.signal()
        }
        try redis.waitUntilKeyeventSubscribers(1)
        // Without back-pressure the 1025th line is read with the rest and
        // debited at once; with it, it waits. An absence: watched for a while.
        let watchUntil = Date().addingTimeInterval(0.5)
        while Date() < watchUntil {
            XCTAssertEqual(try redis.balances("bpfree"), ["FOOD": 1_000], "the request past the limit was read")
            Thread.sleep(forTimeInterval: 0.02)
        }
        try redis.command("DEL", "lock:{bp1}", "lock:{bp2}")
        for index in 0..<held {
            let answer = try client.readResponse()
            XCTAssertEqual(answer.id, "bp-\(index)")
            XCTAssertEqual(answer.code, "00", answer.reason ?? "")
        }
        XCTAssertEqual(try client.readResponse().code, "00")
        XCTAssertEqual(sent.wait(timeout: .now() + 10), .success)
        sendError.lock()
        XCTAssertNil(failure)
        sendError.unlock()
        XCTAssertEqual(try redis.balances("bpfree"), ["FOOD": 900])
    }
}
