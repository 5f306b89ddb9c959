@testable import AuthorizerServer
import XCTest

/// The connection lifecycle both fronts share, without a channel: frames are
/// numbers, and each event's actions are what a handler would carry out.
final class ConnectionLifecycleTests: XCTestCase {
    private typealias Lifecycle = ConnectionLifecycle<Int>

    /// A lifecycle with frames 1...count decoded, each dispatched or parked.
    private func decoded(_ count: Int, maxInFlight: Int) -> Lifecycle {
        var lifecycle = Lifecycle(maxInFlight: maxInFlight)
        for frame in 1...count { _ = lifecycle.frameDecoded(frame) }
        return lifecycle
    }

    // MARK: - The hard in-flight limit

    func testAFramePastTheLimitIsParkedAndReadsAreHeld() {
        var lifecycle = Lifecycle(maxInFlight: 2)
        XCTAssertEqual(lifecycle.readRequested(), .read)
        XCTAssertEqual(lifecycle.frameDecoded(1), .dispatch(1))
        XCTAssertEqual(lifecycle.frameDecoded(2), .dispatch(2))
        XCTAssertEqual(lifecycle.frameDecoded(3), .park, "maxInFlight + 1: parked, not dispatched")
        XCTAssertEqual(lifecycle.inFlight, 2)
        XCTAssertEqual(lifecycle.parkedCount, 1)
        XCTAssertEqual(lifecycle.readRequested(), .hold)
    }

    func testAnAnswerDispatchesTheParkedFrameAndReadsResumeOnceNothingIsParked() {
        var lifecycle = decoded(2, maxInFlight: 1)
        XCTAssertEqual(lifecycle.readRequested(), .hold)
        XCTAssertEqual(lifecycle.requestsFinished(1), [.dispatch(2)], "still at the limit: reads stay held")
        XCTAssertEqual(lifecycle.parkedCount, 0)
        XCTAssertEqual(lifecycle.requestsFinished(1), [.resumeReads])
        XCTAssertEqual(lifecycle.readRequested(), .read)
    }

    func testHeldReadsResumeBelowHalfTheLimit() {
        var lifecycle = decoded(5, maxInFlight: 4)
        XCTAssertEqual(lifecycle.readRequested(), .hold)
        XCTAssertEqual(lifecycle.requestsFinished(1), [.dispatch(5)])
        XCTAssertEqual(lifecycle.requestsFinished(1), [], "3 in flight")
        XCTAssertEqual(lifecycle.requestsFinished(1), [], "2 in flight")
        XCTAssertEqual(lifecycle.requestsFinished(1), [.resumeReads], "1 in flight: below half")
        XCTAssertEqual(lifecycle.requestsFinished(1), [], "the read was resumed once")
    }

    func testParkedFramesAreDispatchedInArrivalOrderAsPlacesFree() {
        var lifecycle = decoded(6, maxInFlight: 2)
        XCTAssertEqual(lifecycle.parkedCount, 4)
        XCTAssertEqual(lifecycle.requestsFinished(2), [.dispatch(3), .dispatch(4)])
        XCTAssertEqual(lifecycle.frameDecoded(7), .park, "behind the frames already parked")
        XCTAssertEqual(lifecycle.requestsFinished(1), [.dispatch(5)])
        XCTAssertEqual(lifecycle.requestsFinished(2), [.dispatch(6), .dispatch(7)])
        XCTAssertEqual(lifecycle.inFlight, 2)
        XCTAssertEqual(lifecycle.parkedCount, 0)
    }

    func testAtTheLimitWithNothingParkedAReadIsHeldToo() {
        var lifecycle = decoded(2, maxInFlight: 2)
        XCTAssertEqual(lifecycle.readRequested(), .hold)
        XCTAssertEqual(lifecycle.requestsFinished(1), [], "1 in flight: not below half of 2")
        XCTAssertEqual(lifecycle.requestsFinished(1), [.resumeReads])
    }

    // MARK: - Quiesce

    func testAQuiesceAnswersWhatWasReadThenClosesTheOutputAndLingers() {
        var lifecycle = decoded(3, maxInFlight: 2)
        XCTAssertEqual(lifecycle.quiesce(), [], "two in flight, one parked: still owed")
        XCTAssertEqual(lifecycle.readRequested(), .hold, "reading stops")
        XCTAssertEqual(lifecycle.frameDecoded(4), .drop, "read after the quiesce: never answered")
        XCTAssertTrue(lifecycle.writesAnswers)
        XCTAssertEqual(lifecycle.requestsFinished(1), [.dispatch(3)], "the parked frame is still answered")
        XCTAssertEqual(lifecycle.requestsFinished(1), [])
        XCTAssertEqual(lifecycle.requestsFinished(1), [.flushLastAnswers])
        XCTAssertFalse(lifecycle.writesAnswers)
        XCTAssertEqual(lifecycle.lastAnswersFlushed(), [.closeOutputAndLinger])
        XCTAssertEqual(lifecycle.state, .lingering)
        XCTAssertEqual(lifecycle.frameDecoded(5), .drop)
        XCTAssertEqual(lifecycle.readRequested(), .read, "lingering: input is read and dropped")
        XCTAssertEqual(lifecycle.inputClosed(), [.close])
    }

    func testAQuiesceWithNothingOwedFinishesAtOnce() {
        var lifecycle = Lifecycle(maxInFlight: 4)
        XCTAssertEqual(lifecycle.quiesce(), [.flushLastAnswers])
        XCTAssertEqual(lifecycle.quiesce(), [], "asked twice: finishing already")
    }

    func testThePeerClosingBeforeTheLastFlushClosesInsteadOfLingering() {
        var lifecycle = Lifecycle(maxInFlight: 4)
        XCTAssertEqual(lifecycle.quiesce(), [.flushLastAnswers])
        XCTAssertEqual(lifecycle.inputClosed(), [], "the last answers are still being flushed")
        XCTAssertEqual(lifecycle.lastAnswersFlushed(), [.close])
    }

    // MARK: - Input closed

    func testInputClosedAnswersWhatWasReadThenCloses() {
        var lifecycle = decoded(2, maxInFlight: 1)
        XCTAssertEqual(lifecycle.inputClosed(), [])
        XCTAssertEqual(lifecycle.requestsFinished(1), [.dispatch(2)])
        XCTAssertEqual(lifecycle.requestsFinished(1), [.flushLastAnswers])
        XCTAssertEqual(lifecycle.lastAnswersFlushed(), [.close], "the peer sends nothing more: no lingering")
    }

    func testAQuiesceAfterInputClosedDoesNotLinger() {
        var lifecycle = decoded(1, maxInFlight: 1)
        XCTAssertEqual(lifecycle.inputClosed(), [])
        XCTAssertEqual(lifecycle.quiesce(), [])
        XCTAssertEqual(lifecycle.requestsFinished(1), [.flushLastAnswers])
        XCTAssertEqual(lifecycle.lastAnswersFlushed(), [.close])
    }

    // MARK: - Fatal frames

    func testAFatalFrameIsAnsweredThenTheConnectionCloses() {
        var lifecycle = decoded(1, maxInFlight: 4)
        XCTAssertEqual(lifecycle.fatalFrameDecoded(2), .dispatch(2), "taken up, to be answered")
        XCTAssertEqual(lifecycle.frameDecoded(3), .drop, "nothing after it is accepted")
        XCTAssertEqual(lifecycle.readRequested(), .hold)
        XCTAssertEqual(lifecycle.requestsFinished(1), [], "its answer is still owed")
        XCTAssertEqual(lifecycle.requestsFinished(1), [.flushLastAnswers])
        XCTAssertEqual(lifecycle.lastAnswersFlushed(), [.close], "closed, not lingering")
        XCTAssertEqual(lifecycle.state, .closed)
    }

    func testAParkedFatalFrameWaitsItsTurn() {
        var lifecycle = decoded(2, maxInFlight: 1)
        XCTAssertEqual(lifecycle.fatalFrameDecoded(3), .park)
        XCTAssertEqual(lifecycle.frameDecoded(4), .drop)
        XCTAssertEqual(lifecycle.requestsFinished(1), [.dispatch(2)])
        XCTAssertEqual(lifecycle.requestsFinished(1), [.dispatch(3)])
        XCTAssertEqual(lifecycle.requestsFinished(1), [.flushLastAnswers])
        XCTAssertEqual(lifecycle.lastAnswersFlushed(), [.close])
    }

    func testAFatalFrameWinsOverAQuiesce() {
        var lifecycle = Lifecycle(maxInFlight: 4)
        XCTAssertEqual(lifecycle.fatalFrameDecoded(1), .dispatch(1))
        XCTAssertEqual(lifecycle.quiesce(), [])
        XCTAssertEqual(lifecycle.requestsFinished(1), [.flushLastAnswers])
        XCTAssertEqual(lifecycle.lastAnswersFlushed(), [.close], "the rest of its input is unread: no lingering")
    }

    // MARK: - Channel gone

    func testChannelInactiveDropsEverything() {
        var lifecycle = decoded(3, maxInFlight: 2)
        lifecycle.channelInactive()
        XCTAssertEqual(lifecycle.state, .closed)
        XCTAssertEqual(lifecycle.parkedCount, 0, "parked frames dropped")
        XCTAssertFalse(lifecycle.writesAnswers, "decisions still to come are not written")
        XCTAssertEqual(lifecycle.requestsFinished(1), [], "nothing dispatched, nothing resumed")
        XCTAssertEqual(lifecycle.frameDecoded(4), .drop)
        XCTAssertEqual(lifecycle.quiesce(), [])
        XCTAssertEqual(lifecycle.inputClosed(), [])
        XCTAssertEqual(lifecycle.readIdle(), [])
        XCTAssertEqual(lifecycle.becameUnwritable(), [])
    }

    func testAnUnwritableChannelIsClosedAtOnce() {
        var lifecycle = decoded(3, maxInFlight: 2)
        XCTAssertEqual(lifecycle.becameUnwritable(), [.close])
        XCTAssertEqual(lifecycle.parkedCount, 0)
        XCTAssertFalse(lifecycle.writesAnswers)
        XCTAssertEqual(lifecycle.becameUnwritable(), [], "closed once")
    }

    // MARK: - Idle timeout and flushes

    func testAnIdleConnectionClosesOnlyWhenNothingIsOwed() {
        var lifecycle = decoded(1, maxInFlight: 2)
        XCTAssertEqual(lifecycle.readIdle(), [], "an answer is owed")
        XCTAssertEqual(lifecycle.requestsFinished(1), [])
        XCTAssertEqual(lifecycle.readIdle(), [.close])
        XCTAssertEqual(lifecycle.state, .closed)
    }

    func testOneFlushPerTickHoweverManyAnswers() {
        var lifecycle = Lifecycle(maxInFlight: 2)
        XCTAssertTrue(lifecycle.answerWritten())
        XCTAssertFalse(lifecycle.answerWritten())
        lifecycle.flushRan()
        XCTAssertTrue(lifecycle.answerWritten())
    }
}
