@testable import AuthorizerServer
import XCTest

/// AccountGate's per-job state machine, without Redis or timers: each event
/// in each phase and the action it asks for.
final class JobStateMachineTests: XCTestCase {
    private func attempting() -> JobStateMachine {
        var machine = JobStateMachine()
        machine.attemptStarted()
        return machine
    }

    func testAFirstLockedRegistersThenAttemptsAgain() {
        var machine = attempting()
        XCTAssertEqual(machine.locked(pastDeadline: false, registered: false), .register)
        XCTAssertEqual(machine.phase, .registering)
        XCTAssertEqual(machine.registrationSucceeded(), .attempt)
    }

    func testALaterLockedWaitsAndAWakeAttempts() {
        var machine = attempting()
        XCTAssertEqual(machine.locked(pastDeadline: false, registered: true), .wait)
        XCTAssertEqual(machine.phase, .waiting)
        XCTAssertTrue(machine.retryIsDue)
        XCTAssertEqual(machine.woken(), .attempt)
    }

    func testAWakeDuringTheAttemptIsNotLost() {
        var machine = attempting()
        XCTAssertEqual(machine.woken(), .none, "the script in flight decides first")
        XCTAssertEqual(machine.locked(pastDeadline: false, registered: true), .attemptAgain, "the unlock came while the script was in flight")
        machine.attemptStarted()
        XCTAssertFalse(machine.wokenDuringAttempt, "a new attempt starts clean")
        XCTAssertEqual(machine.locked(pastDeadline: false, registered: true), .wait)
    }

    func testAWakeDuringRegistrationIsNotLost() {
        var machine = attempting()
        XCTAssertEqual(machine.locked(pastDeadline: false, registered: false), .register)
        XCTAssertEqual(machine.woken(), .none)
        XCTAssertEqual(machine.registrationSucceeded(), .attempt)
        machine.attemptStarted()
        XCTAssertEqual(machine.locked(pastDeadline: false, registered: true), .wait)
    }

    func testLockedPastTheBudgetIsDeclined() {
        var machine = attempting()
        XCTAssertEqual(machine.locked(pastDeadline: true, registered: true), .declineBusy)
    }

    func testTheLockDeadlineDeclinesOnlyWhenNothingIsInFlight() {
        var machine = JobStateMachine()
        XCTAssertEqual(machine.lockDeadlinePassed(), .declineBusy, "queued behind another request")
        machine.attemptStarted()
        XCTAssertEqual(machine.lockDeadlinePassed(), .none, "the script in flight decides")
        _ = machine.locked(pastDeadline: false, registered: false)
        XCTAssertEqual(machine.lockDeadlinePassed(), .none, "registering: the next attempt decides")
        _ = machine.registrationSucceeded()
        machine.attemptStarted()
        _ = machine.locked(pastDeadline: false, registered: true)
        XCTAssertEqual(machine.lockDeadlinePassed(), .declineBusy, "waiting for the lock")
    }

    func testTheSLADeadlinesTimeOutAScriptInFlightAndDeclineTheRest() {
        var machine = JobStateMachine()
        XCTAssertEqual(machine.answerMarginReached(), .waitForLastMoment)
        XCTAssertEqual(machine.lastMomentReached(), .declineAndAnswer)
        machine.attemptStarted()
        XCTAssertEqual(machine.answerMarginReached(), .timeOut)
        XCTAssertEqual(machine.lastMomentReached(), .timeOut)
        machine.finished()
        XCTAssertEqual(machine.lastMomentReached(), .answerDeclined, "finished, not answered")
    }

    /// A decline in flight may come back with the id's first decision (an
    /// approval): at the SLA's margin it is treated as a script in flight.
    func testADeclineInFlightTimesOutAtTheSLA() {
        var machine = JobStateMachine()
        machine.attemptStarted()
        _ = machine.locked(pastDeadline: false, registered: true)
        machine.declineStarted()
        XCTAssertTrue(machine.isDone, "no more scripts")
        XCTAssertEqual(machine.woken(), .none)
        XCTAssertFalse(machine.retryIsDue)
        XCTAssertEqual(machine.lockDeadlinePassed(), .none)
        XCTAssertEqual(machine.registrationSucceeded(), .unregister)
        XCTAssertEqual(machine.answerMarginReached(), .timeOut)
        XCTAssertEqual(machine.lastMomentReached(), .timeOut)
        machine.finished()
        XCTAssertEqual(machine.phase, .done)
    }

    func testAFinishedJobIgnoresEverything() {
        var machine = attempting()
        _ = machine.locked(pastDeadline: false, registered: false)
        machine.finished()
        XCTAssertTrue(machine.isDone)
        XCTAssertEqual(machine.registrationSucceeded(), .unregister, "the registration is given back")
        XCTAssertFalse(machine.registrationFailed())
        XCTAssertEqual(machine.woken(), .none)
        XCTAssertFalse(machine.retryIsDue)
        XCTAssertEqual(machine.lockDeadlinePassed(), .none)
    }

    func testAFailedRegistrationFallsBackToRetries() {
        var machine = attempting()
        _ = machine.locked(pastDeadline: false, registered: false)
        XCTAssertTrue(machine.registrationFailed())
        XCTAssertEqual(machine.phase, .waiting)
        XCTAssertTrue(machine.retryIsDue)
    }
}
