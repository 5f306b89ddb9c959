import NIOCore

/// The life of one connection on either front (terminal lines, ISO 8583
/// links): what it reads, how many of its requests are being decided, when
/// it stops reading, and how it ends. Pure: no channel, no event loop, no
/// timers; `TerminalHandler` and `ISO8583Handler` feed it events and carry
/// out the actions it returns. Each front keeps only its codec and the order
/// its answers leave in.
///
///     open --quiesce / input closed / fatal frame--> draining --nothing owed--> finishing
///     finishing --last answers flushed--> lingering (after a quiesce) or closed
///     lingering --input closed (or LingeringClose's limit)--> closed
///     any --inactive / unwritable / idle with nothing owed--> closed
///
/// The rules, the same on both fronts:
/// - **Hard in-flight limit.** At most `maxInFlight` requests are in flight
///   (dispatched, their answer not yet written). A frame decoded beyond it
///   is parked, and parked frames are dispatched in arrival order as answers
///   free places. Reads are held while anything is parked, so the parked
///   queue holds at most what the reads already under way brought. Once held,
///   reads resume when nothing is parked and fewer than half the places are
///   taken.
/// - **Quiesce.** Reading stops; every frame decoded before the quiesce,
///   parked or in flight, is answered; frames decoded after it are dropped
///   unanswered. Then the output is closed and the connection lingers (see
///   `LingeringClose`).
/// - **Fatal frame** (a frame after which the stream cannot be trusted: a
///   line or message over the limit, an ISO message nothing can be matched
///   to). It is taken up in its turn like any frame (answered when its
///   codec can answer it), frames after it are dropped, and once it and
///   everything before it are answered the connection closes.
/// - **Input closed** (the peer half-closed). Everything read is answered,
///   then the connection closes; the peer sends nothing more, so there is
///   nothing to linger for.
struct ConnectionLifecycle<Frame> {
    enum State: Equatable {
        /// Reading frames (or holding reads at the in-flight limit).
        case open
        /// No frame accepted any more; answering what is owed.
        case draining(lingerAtEnd: Bool)
        /// Nothing owed; the last answers are being flushed.
        case finishing(lingerAtEnd: Bool)
        /// Output closed; the peer's input is read and dropped until it closes.
        case lingering
        /// Nothing more is written or read.
        case closed
    }

    /// What to do with a frame the codec has just decoded.
    enum FrameAction {
        /// Take it up now; it is in flight until `requestsFinished`.
        case dispatch(Frame)
        /// Every place is taken: it waits, and reads are held until it is dispatched.
        case park
        /// Not accepted (after a quiesce, a fatal frame, or the output closed): never answered.
        case drop
    }

    enum Action {
        /// Take this parked frame up now; it is in flight until `requestsFinished`.
        case dispatch(Frame)
        /// Pass on the read that was held (`context.read()`).
        case resumeReads
        /// Everything owed is answered: flush the last answers, then report `lastAnswersFlushed()`.
        case flushLastAnswers
        /// Close the output and read and drop the peer's input until it closes (`LingeringClose`).
        case closeOutputAndLinger
        /// Close the channel.
        case close
    }

    enum ReadDecision: Equatable {
        /// Pass the read on.
        case read
        /// Hold it; an `Action.resumeReads` passes it on later (while open).
        case hold
    }

    let maxInFlight: Int
    private(set) var state: State = .open
    /// Requests dispatched whose answer is not written yet.
    private(set) var inFlight = 0
    /// A read was held at the limit; `resumeReads` is owed once the connection drains enough.
    private(set) var readHeld = false
    private var parked = CircularBuffer<Frame>(initialCapacity: 4)
    private var flushScheduled = false

    init(maxInFlight: Int) {
        precondition(maxInFlight > 0, "a connection takes at least one request at a time")
        self.maxInFlight = maxInFlight
    }

    var parkedCount: Int { parked.count }

    /// Requests in flight or parked: what the connection still owes answers for.
    var owed: Int { inFlight + parked.count }

    /// Answers are written only while requests are owed them (not once the
    /// connection is finishing, lingering or closed).
    var writesAnswers: Bool {
        switch state {
        case .open, .draining: return true
        case .finishing, .lingering, .closed: return false
        }
    }

    /// New frames are taken (dispatched or parked) only while open.
    var acceptsFrames: Bool { state == .open }

    /// Reads held past the limit resume below this many in flight (half the
    /// places), so that a connection at the limit is not read one frame at a time.
    private var resumeBelow: Int { (maxInFlight + 1) / 2 }

    // MARK: - Events

    /// The codec decoded a frame.
    mutating func frameDecoded(_ frame: Frame) -> FrameAction {
        accept(frame, fatal: false)
    }

    /// The codec decoded a frame after which the connection cannot go on
    /// (over the length limit, or nothing an answer could be matched to). It
    /// is taken up in its turn; nothing after it is accepted.
    mutating func fatalFrameDecoded(_ frame: Frame) -> FrameAction {
        accept(frame, fatal: true)
    }

    /// The pipeline asks for a read (after each read completes, or on the first).
    mutating func readRequested() -> ReadDecision {
        switch state {
        case .lingering:
            return .read
        case .open where parked.isEmpty && inFlight < maxInFlight:
            return .read
        case .open:
            readHeld = true
            return .hold
        case .draining, .finishing, .closed:
            return .hold
        }
    }

    /// `count` requests are finished: their answers written, or none owed.
    /// Frees their places for parked frames; may resume reads or end the connection.
    mutating func requestsFinished(_ count: Int = 1) -> [Action] {
        precondition(count >= 0)
        guard writesAnswers else { return [] }
        assert(count <= inFlight, "more requests finished than were in flight")
        inFlight -= count
        var actions: [Action] = []
        while inFlight < maxInFlight, let frame = parked.popFirst() {
            inFlight += 1
            actions.append(.dispatch(frame))
        }
        actions += settle()
        checkInvariants()
        return actions
    }

    /// An answer was written (not flushed yet). True when the handler must
    /// schedule a flush for the end of this event-loop tick: one flush per
    /// tick, however many answers.
    mutating func answerWritten() -> Bool {
        guard !flushScheduled else { return false }
        flushScheduled = true
        return true
    }

    /// The scheduled flush ran.
    mutating func flushRan() {
        flushScheduled = false
    }

    /// A graceful shutdown asked the connection to finish: stop reading,
    /// answer what was read, then close the output and linger.
    mutating func quiesce() -> [Action] {
        guard state == .open else { return [] }
        state = .draining(lingerAtEnd: true)
        let actions = settle()
        checkInvariants()
        return actions
    }

    /// The peer closed its side: answer what was read, then close.
    mutating func inputClosed() -> [Action] {
        let actions: [Action]
        switch state {
        case .open, .draining:
            state = .draining(lingerAtEnd: false)
            actions = settle()
        case .finishing:
            state = .finishing(lingerAtEnd: false)
            actions = []
        case .lingering:
            state = .closed
            actions = [.close]
        case .closed:
            actions = []
        }
        checkInvariants()
        return actions
    }

    /// The flush asked for by `flushLastAnswers` completed (or failed).
    mutating func lastAnswersFlushed() -> [Action] {
        guard case .finishing(let lingerAtEnd) = state else { return [] }
        if lingerAtEnd {
            state = .lingering
            return [.closeOutputAndLinger]
        }
        state = .closed
        return [.close]
    }

    /// Nothing was read for the idle timeout: close when nothing is owed.
    mutating func readIdle() -> [Action] {
        guard state == .open, owed == 0 else { return [] }
        close()
        return [.close]
    }

    /// The outbound buffer passed its high-water mark: the peer does not
    /// read its answers. Close rather than buffer without bound.
    mutating func becameUnwritable() -> [Action] {
        guard state != .closed else { return [] }
        close()
        return [.close]
    }

    /// The channel is gone: parked frames are dropped, and answers still to
    /// come are not written.
    mutating func channelInactive() {
        close()
    }

    // MARK: - Rules

    private mutating func accept(_ frame: Frame, fatal: Bool) -> FrameAction {
        guard state == .open else { return .drop }
        if fatal { state = .draining(lingerAtEnd: false) }
        let action: FrameAction
        if parked.isEmpty && inFlight < maxInFlight {
            inFlight += 1
            action = .dispatch(frame)
        } else {
            parked.append(frame)
            action = .park
        }
        checkInvariants()
        return action
    }

    /// After places were freed or the connection stopped reading: resume the
    /// held read, or start the end once nothing is owed.
    private mutating func settle() -> [Action] {
        switch state {
        case .open where readHeld && parked.isEmpty && inFlight < resumeBelow:
            readHeld = false
            return [.resumeReads]
        case .draining(let lingerAtEnd) where owed == 0:
            state = .finishing(lingerAtEnd: lingerAtEnd)
            return [.flushLastAnswers]
        default:
            return []
        }
    }

    private mutating func close() {
        state = .closed
        inFlight = 0
        parked.removeAll()
        readHeld = false
        checkInvariants()
    }

    private func checkInvariants() {
        assert(inFlight >= 0 && inFlight <= maxInFlight, "in flight \(inFlight), limit \(maxInFlight)")
        assert(parked.isEmpty || inFlight == maxInFlight, "a frame is parked only while every place is taken")
        switch state {
        case .open, .draining:
            break
        case .finishing, .lingering, .closed:
            assert(owed == 0, "nothing is owed once the connection is ending")
        }
    }
}

extension ConnectionLifecycle.FrameAction: Equatable where Frame: Equatable {}
extension ConnectionLifecycle.Action: Equatable where Frame: Equatable {}
