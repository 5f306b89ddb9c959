@testable import AuthorizerServer
import XCTest

final class OwedAnswerTests: XCTestCase {
    func testADurableLineIsAnsweredAtOnce() {
        var owed = OwedAnswer()
        XCTAssertEqual(owed.lineWritten(), .wait)
        XCTAssertEqual(owed.lineDurable(), .answer(beforeSync: false))
        XCTAssertEqual(owed.lastMoment(), .wait, "answered once")
    }

    func testAStalledFsyncIsNotWaitedForPastTheLastMoment() {
        var owed = OwedAnswer()
        XCTAssertEqual(owed.lineWritten(), .wait)
        XCTAssertEqual(owed.lastMoment(), .answer(beforeSync: true))
        XCTAssertEqual(owed.lineDurable(), .wait, "answered once")
    }

    func testALineNotYetWrittenAtTheLastMomentIsAnsweredWhenWritten() {
        var owed = OwedAnswer()
        XCTAssertEqual(owed.lastMoment(), .wait, "a line not in the kernel would not survive a crash of serve")
        XCTAssertEqual(owed.lineWritten(), .answer(beforeSync: true))
        XCTAssertTrue(owed.answered)
    }

    func testAFailedJournalIsAnsweredWithTheReversalOwedInMemory() {
        var owed = OwedAnswer()
        XCTAssertEqual(owed.lastMoment(), .wait)
        XCTAssertEqual(owed.lineDurable(), .answer(beforeSync: false))
    }
}
