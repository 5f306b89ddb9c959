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
        XCTAssertNoThrow(try run(redis.replayerURL, ["XADD", "statements", "*", "type", "test"]))
        XCTAssertNoThrow(try run(redis.replayerURL, ["XLEN", "notifications:{x}"]))
        XCTAssertThrowsError(try run(redis.replayerURL, ["HSET", "account:{x}", "FOOD", "1"]))
        XCTAssertThrowsError(try run(redis.replayerURL, ["XADD", "other", "*", "a", "b"]))
    }

    func testWithoutAPasswordNothingIsAllowed() throws {
        XCTAssertThrowsError(try run("redis://127.0.0.1:\(redis.port)/0", ["GET", "x"])) { error in
            XCTAssertTrue("\(error)".contains("NOAUTH"), "\(error)")
        }
    }

    private func run(_ url: String, _ command: [String]) throws -> RESPValue {
        let client = RedisClient(endpoint: try RedisEndpoint(url: url), eventLoop: redis.group.next())
        defer { client.close() }
        return try client.send(RedisCommand(command)).wait()
    }
}
