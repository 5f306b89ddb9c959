import XCTest

/// Each test gets its own Redis and its own `authorizer serve`.
class IntegrationTestCase: XCTestCase {
    var redis: RedisServer!
    var serve: ServeProcess!

    /// Extra `serve` arguments for the whole class.
    var serveArguments: [String] { [] }

    override func setUpWithError() throws {
        // With the project's ACL users: `serve` and the CLI run as `authorizer`.
        redis = try RedisServer(name: String(describing: type(of: self)), acl: true)
        try runAuthorizer(["rules", "init", "--redis", redis.url])
        serve = try ServeProcess(redis: redis, arguments: serveArguments)
    }

    override func tearDown() {
        serve = nil
        redis = nil
    }

    func account(_ id: String, _ balances: [String: Int64]) throws {
        try redis.setBalances(id, balances)
    }
}
