/// Where one request of an account's queue stands, and what each event asks
/// of `AccountGate`. Pure: no timers, no Redis, no event loop; the gate
/// performs the actions it returns (the model: a channel handler's state
/// machine returning actions).
///
///     queued --attempt--> attempting --LOCKED, first--> registering --registered--> attempting
///                             |  \--LOCKED, watching--> waiting --woken / retry--> attempting
///                             \--decided--> done
///     any phase --declined--> declining (decline.lua in flight) --its reply--> done
///
/// A declining job sends no more scripts, but its answer is not known until
/// decline.lua replies: the id may have been decided already (by a script of
/// a process that died holding the lock), and then that first decision is
/// the answer.
struct JobStateMachine {
    enum Phase: Equatable { case queued, attempting, registering, waiting, declining, done }

    private(set) var phase: Phase = .queued
    /// A keyevent arrived while a script or the registration was in flight:
    /// after a LOCKED reply, look again at once instead of waiting.
    private(set) var wokenDuringAttempt = false

    /// Sends no more scripts (finished, or its decline in flight).
    var isDone: Bool { phase == .done || phase == .declining }

    /// The job's script is sent (the head of its queue, or a retry).
    mutating func attemptStarted() {
        assert(phase != .done, "a finished job sends nothing")
        phase = .attempting
        wokenDuringAttempt = false
    }

    /// The job is answered (or its decline's reply is back); nothing it does afterwards counts.
    mutating func finished() {
        phase = .done
    }

    /// decline.lua is sent for the job.
    mutating func declineStarted() {
        assert(phase != .done, "a finished job is not declined")
        phase = .declining
    }

    enum WakeAction: Equatable {
        /// Cancel the pending retry and send the script again.
        case attempt
        case none
    }

    /// The lock's keyevent (del / expired) arrived.
    mutating func woken() -> WakeAction {
        switch phase {
        case .waiting:
            return .attempt
        case .attempting, .registering:
            wokenDuringAttempt = true
            return .none
        case .queued, .declining, .done:
            return .none
        }
    }

    /// The retry timer (the holder's TTL) fired: send again only if still waiting.
    var retryIsDue: Bool { phase == .waiting }

    enum LockedAction: Equatable {
        /// Past the lock budget: `07 account busy`.
        case declineBusy
        /// First LOCKED: register for the keyevent, then look at the lock once more.
        case register
        /// Woken while the script was in flight: the lock may be free already.
        case attemptAgain
        /// Wait for the keyevent, or the holder's TTL when it has one.
        case wait
    }

    /// The script answered LOCKED (another holder).
    mutating func locked(pastDeadline: Bool, registered: Bool) -> LockedAction {
        assert(phase == .attempting, "LOCKED answers a script in flight")
        if pastDeadline { return .declineBusy }
        if !registered {
            phase = .registering
            return .register
        }
        if wokenDuringAttempt { return .attemptAgain }
        phase = .waiting
        return .wait
    }

    enum RegisteredAction: Equatable {
        /// Finished meanwhile: give the registration back.
        case unregister
        /// Look at the lock once more (an unlock before the subscription was live is not missed).
        case attempt
    }

    mutating func registrationSucceeded() -> RegisteredAction {
        isDone ? .unregister : .attempt
    }

    /// No keyevents for this lock: true when the job must fall back to retries (holder's TTL, deadline).
    mutating func registrationFailed() -> Bool {
        guard !isDone else { return false }
        phase = .waiting
        return true
    }

    enum LockDeadlineAction: Equatable {
        case declineBusy
        /// A script is in flight: its reply decides (a LOCKED is declined then).
        case none
    }

    /// The lock budget is over.
    func lockDeadlinePassed() -> LockDeadlineAction {
        switch phase {
        case .queued, .waiting: return .declineBusy
        case .attempting, .registering, .declining, .done: return .none
        }
    }

    enum AnswerMarginAction: Equatable {
        /// The script (or the decline) is in flight and may still run: `07
        /// timeout` (an authorization is reversed).
        case timeOut
        /// Nothing in flight: wait for the last moment.
        case waitForLastMoment
    }

    /// `answerMargin` before the SLA, the job unanswered.
    func answerMarginReached() -> AnswerMarginAction {
        phase == .attempting || phase == .declining ? .timeOut : .waitForLastMoment
    }

    enum LastMomentAction: Equatable {
        case timeOut
        /// Declined already; its ledger record is not back yet: answer the 07 now.
        case answerDeclined
        /// No script of this job in flight: decline, and answer now (an
        /// authorization is reversed: its id may have been decided elsewhere).
        case declineAndAnswer
    }

    /// Half a millisecond before the SLA, the job unanswered.
    func lastMomentReached() -> LastMomentAction {
        switch phase {
        case .attempting, .declining: return .timeOut
        case .done: return .answerDeclined
        case .queued, .waiting, .registering: return .declineAndAnswer
        }
    }
}
