import NIOCore
import RedisWire
import XCTest

final class BackoffTests: XCTestCase {
    func testDelaysDoubleFromTheFirstUpToTheCap() {
        var backoff = Backoff(first: .milliseconds(50), max: .seconds(1))
        let delays = (0..<8).map { _ in backoff.failed() }
        XCTAssertEqual(delays, [50, 100, 200, 400, 800, 1_000, 1_000, 1_000].map { TimeAmount.milliseconds($0) })
        XCTAssertEqual(backoff.failures, 8)
    }

    func testASuccessStartsOver() {
        var backoff = Backoff.reconnect
        _ = backoff.failed()
        _ = backoff.failed()
        backoff.succeeded()
        XCTAssertEqual(backoff.failures, 0)
        XCTAssertEqual(backoff.failed(), Backoff.reconnect.first)
    }

    func testTheCapHoldsAfterAnyNumberOfFailures() {
        for preset in [Backoff.reconnect, .owedReversal, .replayer, .resubscribe, .tryAgain] {
            XCTAssertEqual(preset.delay(afterFailures: 1), preset.first)
            XCTAssertEqual(preset.delay(afterFailures: 10_000), preset.max)
        }
    }

    func testTryAgainKeepsItsSteps() {
        XCTAssertEqual((1...6).map { Backoff.tryAgain.delay(afterFailures: $0) }, [2, 4, 8, 16, 25, 25].map { TimeAmount.milliseconds($0) })
    }
}
