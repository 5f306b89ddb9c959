import NIOCore
@testable import RedisWire
import XCTest

final class RedirectMachineTests: XCTestCase {
    private let started = NIODeadline.uptimeNanoseconds(1_000_000_000)
    private let node = ClusterTopology.Node(host: "127.0.0.3", port: 7001)

    private func machine(budget: TimeAmount = .seconds(2)) -> RedirectMachine {
        RedirectMachine(maxRedirects: 8, started: started, tryAgainBudget: budget)
    }

    func testMovedUpdatesTheMapAndResendsToTheNewOwner() {
        var redirect = machine()
        let (action, effects) = redirect.failed(.moved(slot: 42, host: "127.0.0.3", port: 7001), now: started)
        XCTAssertEqual(action, .sendToMaster)
        XCTAssertEqual(effects.moved?.slot, 42)
        XCTAssertEqual(effects.moved?.node, node)
        XCTAssertTrue(effects.refreshSoon)
        XCTAssertEqual(effects.redirect, .moved)
        XCTAssertEqual(redirect.redirects, 1)
    }

    func testAskSendsAskingToTheImportingNodeWithoutTouchingTheMap() {
        var redirect = machine()
        let (action, effects) = redirect.failed(.ask(slot: 42, host: "127.0.0.3", port: 7001), now: started)
        XCTAssertEqual(action, .sendAsking(node))
        XCTAssertNil(effects.moved)
        XCTAssertFalse(effects.refreshSoon)
        XCTAssertEqual(effects.redirect, .ask)
    }

    func testTryAgainRetriesAfterABackOffWithinItsBudgetOnly() {
        var redirect = machine(budget: .milliseconds(20))
        XCTAssertEqual(redirect.failed(.tryAgain, now: started).0, .refreshThenRetry(after: .milliseconds(2)))
        XCTAssertEqual(redirect.failed(.tryAgain, now: started + .milliseconds(17)).0, .refreshThenRetry(after: .milliseconds(2)))
        let (late, effects) = redirect.failed(.tryAgain, now: started + .milliseconds(18))
        XCTAssertEqual(late, .fail)
        XCTAssertEqual(effects.redirect, .tryAgain)
    }

    func testRedirectsStopAtTheLimit() {
        var redirect = machine()
        for _ in 0..<8 {
            XCTAssertEqual(redirect.failed(.moved(slot: 1, host: "h", port: 1), now: started).0, .sendToMaster)
        }
        XCTAssertEqual(redirect.failed(.moved(slot: 1, host: "h", port: 1), now: started).0, .fail)
        XCTAssertEqual(redirect.failed(.ask(slot: 1, host: "h", port: 1), now: started).0, .fail)
    }

    func testALostLinkOrAClusterDownFailsAndReReadsTheMap() {
        var redirect = machine()
        let (lost, lostEffects) = redirect.failed(nil, now: started)
        XCTAssertEqual(lost, .fail)
        XCTAssertTrue(lostEffects.refreshSoon)
        let (down, downEffects) = redirect.failed(.clusterDown, now: started)
        XCTAssertEqual(down, .fail)
        XCTAssertTrue(downEffects.refreshSoon)
    }

    func testAnyOtherErrorStandsAsIs() {
        for kind: RedisErrorKind in [.noScript, .busyGroup, .noGroup, .noPermission, .crossSlot, .outOfMemory, .other] {
            var redirect = machine()
            let (action, effects) = redirect.failed(kind, now: started)
            XCTAssertEqual(action, .fail, "\(kind)")
            XCTAssertEqual(effects, RedirectMachine.Effects(), "\(kind)")
        }
    }
}
