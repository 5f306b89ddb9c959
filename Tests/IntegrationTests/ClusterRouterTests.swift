import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import RedisWire
import XCTest

/// The router against a real cluster: every key reaches its master, and
/// MOVED, ASK and TRYAGAIN during a live slot migration are followed
/// without the caller seeing them.
final class ClusterRouterTests: XCTestCase {
    nonisolated(unsafe) static var shared: RedisCluster?
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let redirects = NIOLockedValueBox<[Redis.RedirectKind: Int]>([:])

    override class func setUp() {
        super.setUp()
        shared = try? RedisCluster(name: "router")
    }

    override class func tearDown() {
        shared = nil
        super.tearDown()
    }

    override func tearDown() {
        try? group.syncShutdownGracefully()
    }

    /// SET of each key, and one GET of a second key of the same slot: one
    /// script, two keys, like authorize.lua with its account and its new txn key.
    private let setBoth = LuaScript(name: "set-both", source: """
    redis.call('SET', KEYS[1], ARGV[1])
    redis.call('SET', KEYS[2], ARGV[1])
    return redis.call('GET', KEYS[1])
    """)

    private func router(_ cluster: RedisCluster) throws -> Redis {
        let seeds = try cluster.nodes.prefix(2).map { try RedisEndpoint(url: $0.url) }
        let counts = redirects
        let router = Redis(
            target: .cluster(seeds: seeds), eventLoop: group.next(), scripts: [setBoth], tryAgainBudget: .seconds(5),
            onRedirect: { kind in counts.withLockedValue { $0[kind, default: 0] += 1 } }
        )
        try router.connect().wait()
        return router
    }

    private func eval(_ router: Redis, _ account: String, _ value: String) throws -> String? {
        try router.eventLoop.flatSubmit {
            router.evalScript(self.setBoth, keys: ["lock:{\(account)}", "txn:{\(account)}:\(value)"], arguments: [value])
        }.wait().string
    }

    func testScriptsReachEveryMasterWithoutRedirections() throws {
        let cluster = try XCTUnwrap(Self.shared)
        let router = try router(cluster)
        for index in 0..<300 {
            XCTAssertEqual(try eval(router, "r\(index)", "v\(index)"), "v\(index)")
        }
        XCTAssertEqual(redirects.withLockedValue { $0 }, [:])
        try router.shutdown().wait()
    }

    func testMovedAskAndTryAgainDuringALiveMigrationAreFollowed() throws {
        let cluster = try XCTUnwrap(Self.shared)
        let router = try router(cluster)
        let account = "mover"
        let slot = HashSlot.of(key: account)
        XCTAssertEqual(try eval(router, account, "before"), "before")
        let source = try XCTUnwrap(cluster.master(ofSlot: slot))
        let target = try XCTUnwrap(cluster.masters().first { $0 !== source })

        try cluster.migrate(slot: slot, to: target) {
            // Keys moved, slot not handed over: a script creating a new key
            // gets TRYAGAIN (source: ASK, target: TRYAGAIN while keys are missing)
            // until SETSLOT NODE; it is retried in the background meanwhile.
            let pending = router.eventLoop.flatSubmit {
                router.evalScript(self.setBoth, keys: ["lock:{\(account)}", "txn:{\(account)}:during"], arguments: ["during"])
            }
            // The first redirection is the evidence that the call is parked on the migration.
            let deadline = Date().addingTimeInterval(5)
            while redirects.withLockedValue({ $0.values.reduce(0, +) }) == 0 && Date() < deadline {
                Thread.sleep(forTimeInterval: 0.005)
            }
            XCTAssertGreaterThan(redirects.withLockedValue { $0.values.reduce(0, +) }, 0, "no redirection seen during the migration")
            pendingDuring = pending
        }
        XCTAssertEqual(try pendingDuring?.wait().string, "during", "the parked call completes on the new owner")
        XCTAssertEqual(try target.command("GET", "lock:{\(account)}").string, "during")
        // The router's map still names the source: the next call is MOVED once, then served.
        XCTAssertEqual(try eval(router, account, "after"), "after")
        let seen = redirects.withLockedValue { $0 }
        XCTAssertGreaterThan(seen[.moved, default: 0] + seen[.ask, default: 0] + seen[.tryAgain, default: 0], 0, "\(seen)")
        XCTAssertEqual(try target.command("GET", "txn:{\(account)}:after").string, "after")
        try router.shutdown().wait()
    }

    private var pendingDuring: EventLoopFuture<RESPValue>?
}
