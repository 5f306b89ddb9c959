import RedisWire
import XCTest

/// Redis ACL users from scripts/redis-users.sh, as `make run` sets them up.
final class SecurityTests: XCTestCase {
    var redis: RedisServer!

    override func setUpWithError() throws {
        redis = try RedisServer(name: "acl", acl: true)
    }

    override func tearDown() {
        redis = nil
    }

    func testServeWorksAsTheAuthorizerUser() throws {
        try runAuthorizer(["rules", "init", "--redis", redis.url])
        try runAuthorizer(["account", "set", "--redis", redis.url, "sec", "FOOD=10.00"])
        let serve = try ServeProcess(redis: redis, arguments: ["--sla-ms", "5000"])
        let client = try serve.connect()
        XCTAssertEqual(try client.request(["id": "s1", "account": "sec", "totalAmount": 1, "mcc": "5411", "merchant": "M"]).code, "00")
        // A lock wait subscribes to the keyevent channels: allowed for this
        // user. The lock has no TTL, so only the `del` event can wake the
        // request before its 5 s deadline.
        try redis.command("SET", "lock:{sec}", "held")
        try client.sendLine(Request.line(id: "s2", account: "sec", amount: "1.00", mcc: "5411"))
        try redis.waitUntilKeyeventSubscribers(1)
        let released = Date()
        try redis.command("DEL", "lock:{sec}")
        XCTAssertEqual(try client.readResponse().code, "00")
        XCTAssertLessThan(Date().timeIntervalSince(released), 2.5, "woken by the del event, not by the deadline")
        XCTAssertEqual(try redis.balances("sec"), ["FOOD": 800])
    }

    func testTheAuthorizerUserCannotFlushOrReconfigure() throws {
        for command in [["FLUSHALL"], ["CONFIG", "SET", "notify-keyspace-events", ""], ["CONFIG", "GET", "hz"], ["KEYS", "*"], ["HSET", "other:key", "a", "1"]] {
            XCTAssertThrowsError(try run(redis.url, command), command.joined(separator: " ")) { error in
                XCTAssertTrue("\(error)".contains("NOPERM"), "\(error)")
            }
        }
    }

    func testTheOperatorUserIsReadOnly() throws {
        try redis.setBalances("op", ["FOOD": 500])
        XCTAssertEqual(try run(redis.operatorURL, ["HGET", "account:{op}", "FOOD"]).string, "500")
        XCTAssertThrowsError(try run(redis.operatorURL, ["HSET", "account:{op}", "FOOD", "1000000"])) { error in
            XCTAssertTrue("\(error)".contains("NOPERM"), "\(error)")
        }
        XCTAssertThrowsError(try run(redis.operatorURL, ["FLUSHALL"]))
        XCTAssertEqual(try redis.balances("op"), ["FOOD": 500])
    }

    func testTheReplayerUserOnlyTouchesStreams() throws {
        XCTAssertNoThrow(try run(redis.replayerURL, ["XLEN", "notifications:{x}"]))
        XCTAssertThrowsError(try run(redis.replayerURL, ["HSET", "account:{x}", "FOOD", "1"]))
        XCTAssertThrowsError(try run(redis.replayerURL, ["XADD", "other", "*", "a", "b"]))
    }

    /// The webhooks deliverer talks to outside endpoints: it may consume the
    /// ledger with its group and change nothing in it, nor anything else.
    func testTheWebhooksUserConsumesTheLedgerAndChangesNothing() throws {
        try redis.setBalances("wh", ["FOOD": 500])
        XCTAssertEqual(try run(redis.webhooksURL, ["XGROUP", "CREATE", "statements", "webhooks", "0", "MKSTREAM"]).string, "OK")
        XCTAssertNoThrow(try run(redis.webhooksURL, ["XREADGROUP", "GROUP", "webhooks", "c", "COUNT", "10", "STREAMS", "statements", ">"]))
        XCTAssertNoThrow(try run(redis.webhooksURL, ["XPENDING", "statements", "webhooks"]))
        for refused in [
            ["XTRIM", "statements", "MAXLEN", "0"], ["XADD", "statements", "*", "type", "credit"], ["XDEL", "statements", "0-1"],
            ["DEL", "statements"], ["XADD", "notifications:{wh}", "*", "text", "x"], ["HSET", "account:{wh}", "FOOD", "1"],
            ["HGET", "account:{wh}", "FOOD"],
        ] {
            XCTAssertThrowsError(try run(redis.webhooksURL, refused), refused.joined(separator: " ")) { error in
                XCTAssertTrue("\(error)".contains("NOPERM"), "\(error)")
            }
        }
        XCTAssertEqual(try redis.balances("wh"), ["FOOD": 500])
    }

    /// The ledger can be appended to by the service's scripts and consumed
    /// by the replayer, and deleted, trimmed, overwritten or forged by neither.
    func testTheLedgerRefusesEachUserWhatItMustNotDo() throws {
        try assertLedgerRefusals(
            authorizer: { try self.run(self.redis.url, $0) },
            replayer: { try self.run(self.redis.replayerURL, $0) },
            streams: ["statements"]
        )
    }

    func testWithoutAPasswordNothingIsAllowed() throws {
        XCTAssertThrowsError(try run("redis://127.0.0.1:\(redis.port)/0", ["GET", "x"])) { error in
            XCTAssertTrue("\(error)".contains("NOAUTH"), "\(error)")
        }
    }

    func run(_ url: String, _ command: [String]) throws -> RESPValue {
        let client = RedisClient(endpoint: try RedisEndpoint(url: url), eventLoop: redis.group.next())
        defer { client.close() }
        return try client.send(RedisCommand(command)).wait()
    }
}

/// What each ACL user may and may not do to the ledger streams (one Redis or a cluster).
func assertLedgerRefusals(
    authorizer: ([String]) throws -> RESPValue, replayer: ([String]) throws -> RESPValue, streams: [String],
    file: StaticString = #filePath, line: UInt = #line
) throws {
    func refused(_ user: String, _ command: [String], _ send: ([String]) throws -> RESPValue) {
        XCTAssertThrowsError(try send(command), "\(user) may not \(command.joined(separator: " "))", file: file, line: line) { error in
            XCTAssertTrue("\(error)".contains("NOPERM"), "\(error)", file: file, line: line)
        }
    }
    for stream in streams {
        // The service: no DEL, XTRIM, XDEL, SET or RENAME of the ledger.
        refused("authorizer", ["DEL", stream], authorizer)
        refused("authorizer", ["XTRIM", stream, "MAXLEN", "0"], authorizer)
        refused("authorizer", ["XDEL", stream, "0-1"], authorizer)
        refused("authorizer", ["SET", stream, "x"], authorizer)
        refused("authorizer", ["UNLINK", stream], authorizer)
        // The replayer: no forged entries, no deletion.
        refused("replayer", ["XADD", stream, "*", "type", "credit"], replayer)
        refused("replayer", ["DEL", stream], replayer)
        refused("replayer", ["XDEL", stream, "0-1"], replayer)
        // What each needs still works.
        XCTAssertNoThrow(try replayer(["XTRIM", stream, "MINID", "0-1"]), file: file, line: line)
        XCTAssertNoThrow(try replayer(["XLEN", stream]), file: file, line: line)
        XCTAssertNoThrow(try authorizer(["XLEN", stream]), file: file, line: line)
    }
    // The service may DEL only locks and rules, SET only locks, txn records and rules.
    refused("authorizer", ["DEL", "account:{ledger-acl}"], authorizer)
    refused("authorizer", ["DEL", "txn:{ledger-acl}:t1"], authorizer)
    refused("authorizer", ["SET", "account:{ledger-acl}", "x"], authorizer)
    XCTAssertNoThrow(try authorizer(["DEL", "lock:{ledger-acl}"]), file: file, line: line)
    XCTAssertNoThrow(try authorizer(["SET", "lock:{ledger-acl}", "t", "PX", "10"]), file: file, line: line)
    XCTAssertNoThrow(try replayer(["XADD", "notifications:{ledger-acl}", "*", "text", "x"]), file: file, line: line)
}
