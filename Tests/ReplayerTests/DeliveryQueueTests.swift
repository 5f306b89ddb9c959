@testable import Replayer
import XCTest

/// The delivery state machine without I/O: order per account, one delivery
/// in flight per account, the concurrency limit, back-off with jitter and
/// the age limit.
final class DeliveryQueueTests: XCTestCase {
    private var retry: WebhookConfiguration.Retry {
        var retry = WebhookConfiguration.Retry()
        retry.firstMilliseconds = 100
        retry.maxMilliseconds = 1_000
        retry.maxAgeSeconds = 10
        return retry
    }

    private func item(_ seq: Int64, _ account: String, enqueued: Int64 = 0) -> DeliveryQueue.Item {
        DeliveryQueue.Item(seq: seq, account: account, attempts: 0, enqueuedMilliseconds: enqueued, dueMilliseconds: 0)
    }

    /// The upper end of the jitter range: the full delay.
    private let highest: (ClosedRange<Int64>) -> Int64 = { $0.upperBound }

    func testOneAccountIsDeliveredInOrderOneAtATime() {
        var queue = DeliveryQueue(maxInFlight: 8, retry: retry)
        for seq in 1...3 { queue.add(item(Int64(seq), "a")) }
        XCTAssertEqual(queue.take(now: 0).map(\.seq), [1])
        XCTAssertEqual(queue.take(now: 0), [], "the next event waits for the first")
        XCTAssertEqual(queue.finished(account: "a", outcome: .delivered, now: 1, random: highest), .forget(item(1, "a")))
        XCTAssertEqual(queue.take(now: 1).map(\.seq), [2])
        _ = queue.finished(account: "a", outcome: .delivered, now: 2, random: highest)
        XCTAssertEqual(queue.take(now: 2).map(\.seq), [3])
        _ = queue.finished(account: "a", outcome: .delivered, now: 3, random: highest)
        XCTAssertEqual(queue.count, 0)
        XCTAssertNil(queue.nextDue)
    }

    func testAFailingAccountHoldsBackOnlyItsOwnEvents() {
        var queue = DeliveryQueue(maxInFlight: 8, retry: retry)
        queue.add(item(1, "bad"))
        queue.add(item(2, "good"))
        queue.add(item(3, "bad"))
        queue.add(item(4, "good"))
        XCTAssertEqual(Set(queue.take(now: 0).map(\.seq)), [1, 2])
        guard case .reschedule(let again, _) = queue.finished(account: "bad", outcome: .failed("HTTP 500"), now: 10, random: highest) else {
            return XCTFail("a failure before the age limit is retried")
        }
        XCTAssertEqual(again.seq, 1)
        XCTAssertEqual(again.attempts, 1)
        XCTAssertEqual(again.dueMilliseconds, 110, "first retry after first_ms")
        _ = queue.finished(account: "good", outcome: .delivered, now: 10, random: highest)
        XCTAssertEqual(queue.take(now: 10).map(\.seq), [4], "the good account goes on; bad's event 3 waits behind 1")
        XCTAssertEqual(queue.take(now: 109), [])
        XCTAssertEqual(queue.take(now: 110).map(\.seq), [1], "the failed event again, not the next one")
    }

    func testTheConcurrencyLimitCountsAccountsInFlight() {
        var queue = DeliveryQueue(maxInFlight: 2, retry: retry)
        for seq in 1...5 { queue.add(item(Int64(seq), "acc\(seq)")) }
        XCTAssertEqual(queue.take(now: 0).map(\.seq), [1, 2])
        XCTAssertEqual(queue.inFlight, 2)
        XCTAssertEqual(queue.take(now: 0), [])
        _ = queue.finished(account: "acc1", outcome: .delivered, now: 0, random: highest)
        XCTAssertEqual(queue.take(now: 0).map(\.seq), [3])
    }

    func testBackOffDoublesToTheCapWithHalfOfItRandom() {
        let queue = DeliveryQueue(maxInFlight: 1, retry: retry)
        XCTAssertEqual((1...6).map { queue.delay(afterAttempts: $0, random: highest) }, [100, 200, 400, 800, 1_000, 1_000])
        XCTAssertEqual((1...6).map { queue.delay(afterAttempts: $0, random: { $0.lowerBound }) }, [50, 100, 200, 400, 500, 500])
        XCTAssertEqual(queue.delay(afterAttempts: 1_000, random: highest), 1_000, "no overflow")
    }

    func testAnEventPastTheAgeLimitIsBuriedAndTheNextOneGoes() {
        var queue = DeliveryQueue(maxInFlight: 1, retry: retry)
        queue.add(item(1, "a", enqueued: 0))
        queue.add(item(2, "a", enqueued: 5_000))
        _ = queue.take(now: 0)
        guard case .reschedule = queue.finished(account: "a", outcome: .failed("refused"), now: 9_999, random: highest) else {
            return XCTFail("still young")
        }
        XCTAssertEqual(queue.take(now: 20_000).map(\.seq), [1])
        guard case .bury(let dead, let error) = queue.finished(account: "a", outcome: .failed("refused"), now: 20_000, random: highest) else {
            return XCTFail("past max_age_seconds it is a dead letter")
        }
        XCTAssertEqual(dead.seq, 1)
        XCTAssertEqual(dead.attempts, 2)
        XCTAssertEqual(error, "refused")
        XCTAssertEqual(queue.count, 1)
        XCTAssertEqual(queue.take(now: 20_000).map(\.seq), [2])
    }

    func testOldestEnqueuedAndLastSeq() {
        var queue = DeliveryQueue(maxInFlight: 4, retry: retry)
        queue.add(item(7, "a", enqueued: 300))
        queue.add(item(9, "b", enqueued: 100))
        XCTAssertEqual(queue.oldestEnqueued, 100)
        XCTAssertEqual(queue.lastSeq, 9)
        XCTAssertEqual(queue.accountCount, 2)
    }

    func testTheHeapPopsInOrder() {
        var heap = MinHeap<Int>()
        for value in [5, 3, 9, 1, 7, 3, 0] { heap.push(value) }
        var popped: [Int] = []
        while let value = heap.pop() { popped.append(value) }
        XCTAssertEqual(popped, [0, 1, 3, 3, 5, 7, 9])
    }
}
