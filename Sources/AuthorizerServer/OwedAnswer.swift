/// When a `07` that owes a reversal is answered, given its journal line's
/// progress. Pure: the gate feeds it the journal's two moments and the SLA's
/// last moment, and answers when it says so.
///
///     durable (fsynced, or failed: owed in memory)      -> answer
///     last moment, line written                         -> answer before the fsync
///     line written, last moment already passed          -> answer before the fsync
///     otherwise                                         -> wait
///
/// A line written but not fsynced survives a crash of serve; only a crash of
/// the host before the fsync ends could lose it. Waiting past the SLA for the
/// fsync would make a slow disk break every timed-out terminal's deadline.
struct OwedAnswer {
    enum Action: Equatable {
        case wait
        case answer(beforeSync: Bool)
    }

    private var written = false
    private var lastMomentPassed = false
    private(set) var answered = false

    /// The line is in the kernel (`write` returned).
    mutating func lineWritten() -> Action {
        written = true
        return lastMomentPassed ? answer(beforeSync: true) : .wait
    }

    /// The fsync finished (or the journal failed: the reversal is owed in memory only).
    mutating func lineDurable() -> Action {
        answer(beforeSync: false)
    }

    /// The SLA's last moment for this request.
    mutating func lastMoment() -> Action {
        lastMomentPassed = true
        return written ? answer(beforeSync: true) : .wait
    }

    private mutating func answer(beforeSync: Bool) -> Action {
        guard !answered else { return .wait }
        answered = true
        return .answer(beforeSync: beforeSync)
    }
}
