import AuthorizerCore
import Logging
import NIOCore

/// Serves one terminal connection: parses each line, hands it to the
/// authorizer, and writes the answers back in request order.
///
/// Many requests may be in flight on one connection (pipelining), at most
/// `maxInFlight`; lines read past the limit wait, unparsed, and reading stops
/// until they are taken up (`ConnectionLifecycle` holds those rules, the
/// same as the ISO 8583 port's). This handler keeps the line codec and the
/// answer queue that puts the answers back in request order.
final class TerminalHandler: LifecycleHandler {
    typealias InboundIn = TerminalFrame
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let authorizer: Authorizer
    let logger: Logger
    var lifecycle: ConnectionLifecycle<TerminalFrame>
    static let connectionName = "terminal connection"

    /// One entry per request in flight, oldest first: its answer, nil while
    /// the decision is pending.
    private var answers = CircularBuffer<ByteBuffer?>(initialCapacity: 16)
    /// When the line of each entry of `answers` was taken up (for the latency histogram).
    private var answerTimes = CircularBuffer<NIODeadline>(initialCapacity: 16)
    /// Sequence number of `answers.first`.
    private var firstSequence: UInt64 = 0
    /// `writeReady` is running: an answer filled meanwhile (a decision that
    /// completed at once) is written by its loop, in order.
    private var writing = false

    init(authorizer: Authorizer, maxInFlight: Int, logger: Logger) {
        precondition(maxInFlight > 0)
        self.authorizer = authorizer
        self.logger = logger
        self.lifecycle = ConnectionLifecycle(maxInFlight: maxInFlight)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        let action: ConnectionLifecycle<TerminalFrame>.FrameAction
        switch frame {
        case .line(let line):
            if Self.isBlank(line) { return }  // nothing asked, nothing owed
            action = lifecycle.frameDecoded(frame)
        case .tooLong:
            action = lifecycle.fatalFrameDecoded(frame)
        }
        guard case .dispatch(let dispatched) = action else { return }
        start(dispatched, context: context)
        writeReady(context: context)
    }

    private static func isBlank(_ line: ByteBuffer) -> Bool {
        line.withUnsafeReadableBytes { bytes in
            bytes.allSatisfy { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }
        }
    }

    /// Takes one frame up: it gets the next place in the answer queue, filled
    /// at once for a refusal, or when the authorizer decides; `writeReady`
    /// writes it in its turn.
    func start(_ frame: TerminalFrame, context: ChannelHandlerContext) {
        switch frame {
        case .tooLong:
            let id = TransactionID.make()
            logger.warning("declined", metadata: ["id": "\(id)", "reason": "\(RejectReason.lineTooLong)"])
            authorizer.metrics.requestDecided(.rejected, .lineTooLong)
            append(id: id, decision: .rejected(.lineTooLong), context: context)
        case .line(let line):
            handle(line: line, context: context)
        }
    }

    private func handle(line: ByteBuffer, context: ChannelHandlerContext) {
        let receivedAt = NIODeadline.now()
        let parsed = line.withUnsafeReadableBytes { bytes in
            TerminalRequestParser.parse(line: bytes, makeID: TransactionID.make)
        }
        switch parsed {
        case .failure(let rejection):
            let id = rejection.id ?? TransactionID.make()
            logger.warning("request refused", metadata: ["id": "\(id)", "reason": "\(rejection.reason)"])
            authorizer.metrics.requestDecided(.rejected, .invalidRequest)
            append(id: id, decision: .rejected(.invalidRequest(rejection.reason)), receivedAt: receivedAt, context: context)
        case .success(let request):
            let sequence = firstSequence + UInt64(answers.count)
            answers.append(nil)
            answerTimes.append(receivedAt)
            let loopBound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
            authorizer.handle(request, receivedAt: receivedAt)
                .hop(to: context.eventLoop)
                .whenComplete { result in
                    let decision: Decision
                    switch result {
                    case .success(let value): decision = value
                    case .failure(let error):
                        decision = .rejected(.internalError("\(error)"))
                        loopBound.value.handler.logger.warning("declined", metadata: ["account": "\(request.holderShown)", "id": "\(request.id)", "reason": "\(decision.reason ?? "")"])
                    }
                    loopBound.value.handler.authorizer.metrics.requestDecided(decision)
                    loopBound.value.handler.logger.debug("decided", metadata: ["account": "\(request.holderShown)", "id": "\(request.id)", "code": "\(decision.code.rawValue)"])
                    loopBound.value.handler.fill(sequence: sequence, id: request.id, decision: decision, context: loopBound.value.context)
                }
        }
    }

    private func append(id: String, decision: Decision, receivedAt: NIODeadline = .now(), context: ChannelHandlerContext) {
        var buffer = context.channel.allocator.buffer(capacity: 64)
        ResponseEncoder.encode(id: id, decision: decision, into: &buffer)
        answers.append(buffer)
        answerTimes.append(receivedAt)
    }

    private func fill(sequence: UInt64, id: String, decision: Decision, context: ChannelHandlerContext) {
        guard lifecycle.writesAnswers else { return }
        let index = Int(sequence - firstSequence)
        assert(index >= 0 && index < answers.count && answers[answers.index(answers.startIndex, offsetBy: index)] == nil)
        var buffer = context.channel.allocator.buffer(capacity: 64)
        ResponseEncoder.encode(id: id, decision: decision, into: &buffer)
        answers[answers.index(answers.startIndex, offsetBy: index)] = buffer
        writeReady(context: context)
    }

    /// Writes every answer whose predecessors are written, and takes up the
    /// parked lines the freed places allow (their answers may be ready at
    /// once: hence the loop). Not reentrant: the running loop writes what
    /// is filled meanwhile, so that every parked line gets its place in the
    /// queue before any answer after it is written.
    private func writeReady(context: ChannelHandlerContext) {
        guard !writing else { return }
        writing = true
        defer { writing = false }
        while lifecycle.writesAnswers {
            assert(answers.count == lifecycle.inFlight, "one answer place per request in flight")
            let written = writeAnswersInOrder(context: context)
            guard written > 0 else { return }
            perform(lifecycle.requestsFinished(written), context: context)
        }
    }

    /// Writes the answers at the head of the queue that are decided; returns how many.
    private func writeAnswersInOrder(context: ChannelHandlerContext) -> Int {
        var written = 0
        while let first = answers.first, let buffer = first {
            answers.removeFirst()
            authorizer.metrics.requestAnswered(receivedAt: answerTimes.removeFirst())
            firstSequence += 1
            context.write(wrapOutboundOut(buffer), promise: nil)
            written += 1
        }
        if written > 0 && lifecycle.answerWritten() { scheduleFlush(context: context) }
        return written
    }
}

/// Ids for requests that carry none: 32 hex digits of randomness.
enum TransactionID {
    static func make() -> String {
        let high = UInt64.random(in: .min ... .max)
        let low = UInt64.random(in: .min ... .max)
        return hex(high) + hex(low)
    }

    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
