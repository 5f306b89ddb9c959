import AuthorizerCore
import Logging
import NIOCore

/// Serves one terminal connection: parses each line, hands it to the
/// authorizer, and writes the answers back in request order.
///
/// Many requests may be in flight on one connection (pipelining); past
/// `maxInFlight` the handler stops reading until answers drain.
final class TerminalHandler: ChannelDuplexHandler {
    typealias InboundIn = TerminalFrame
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let authorizer: Authorizer
    private let maxInFlight: Int
    private let logger: Logger

    /// Answers not yet written, oldest first; nil while the decision is pending.
    private var answers = CircularBuffer<ByteBuffer?>(initialCapacity: 16)
    /// When the line of each entry of `answers` was read (for the latency histogram).
    private var answerTimes = CircularBuffer<NIODeadline>(initialCapacity: 16)
    /// Sequence number of `answers.first`.
    private var firstSequence: UInt64 = 0
    private var readHeld = false
    private var closeWhenDrained = false
    /// A graceful shutdown asked for the close (see `linger`).
    private var quiescing = false
    /// Output closed after the last answer; input is read and dropped.
    private var lingering = false
    private var flushScheduled = false
    private var active = true

    init(authorizer: Authorizer, maxInFlight: Int, logger: Logger) {
        precondition(maxInFlight > 0)
        self.authorizer = authorizer
        self.maxInFlight = maxInFlight
        self.logger = logger
    }


    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if lingering { return }  // sent after the shutdown began: never read, never answered
        switch unwrapInboundIn(data) {
        case .tooLong:
            let id = TransactionID.make()
            logger.warning("declined", metadata: ["id": "\(id)", "reason": "\(RejectReason.lineTooLong)"])
            authorizer.metrics.requestDecided(.rejected, .lineTooLong)
            append(id: id, decision: .rejected(.lineTooLong), context: context)
            closeWhenDrained = true
            writeReady(context: context)
        case .line(let line):
            handle(line: line, context: context)
        }
    }

    private func handle(line: ByteBuffer, context: ChannelHandlerContext) {
        let receivedAt = NIODeadline.now()
        let parsed = line.withUnsafeReadableBytes { bytes -> Result<TerminalRequest, RequestRejection>? in
            if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { return nil }
            return TerminalRequestParser.parse(line: bytes, makeID: TransactionID.make)
        }
        switch parsed {
        case nil:
            return  // blank line
        case .failure(let rejection)?:
            let id = rejection.id ?? TransactionID.make()
            logger.warning("request refused", metadata: ["id": "\(id)", "reason": "\(rejection.reason)"])
            authorizer.metrics.requestDecided(.rejected, .invalidRequest)
            append(id: id, decision: .rejected(.invalidRequest(rejection.reason)), receivedAt: receivedAt, context: context)
            writeReady(context: context)
        case .success(let request)?:
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
                        loopBound.value.handler.logger.warning("declined", metadata: ["account": "\(request.account)", "id": "\(request.id)", "reason": "\(decision.reason ?? "")"])
                    }
                    loopBound.value.handler.authorizer.metrics.requestDecided(decision)
                    loopBound.value.handler.logger.debug("decided", metadata: ["account": "\(request.account)", "id": "\(request.id)", "code": "\(decision.code.rawValue)"])
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
        guard active else { return }
        let index = Int(sequence - firstSequence)
        assert(index >= 0 && index < answers.count && answers[answers.index(answers.startIndex, offsetBy: index)] == nil)
        var buffer = context.channel.allocator.buffer(capacity: 64)
        ResponseEncoder.encode(id: id, decision: decision, into: &buffer)
        answers[answers.index(answers.startIndex, offsetBy: index)] = buffer
        writeReady(context: context)
    }

    /// Writes every answer whose predecessors are written; flushes once per tick.
    private func writeReady(context: ChannelHandlerContext) {
        var wrote = false
        while let first = answers.first, let buffer = first {
            answers.removeFirst()
            authorizer.metrics.requestAnswered(receivedAt: answerTimes.removeFirst())
            firstSequence += 1
            context.write(wrapOutboundOut(buffer), promise: nil)
            wrote = true
        }
        if wrote { scheduleFlush(context: context) }
        if closeWhenDrained && answers.isEmpty {
            let quiescing = self.quiescing
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).assumeIsolated().whenComplete { _ in
                if quiescing {
                    self.linger(context: context)
                } else {
                    context.close(promise: nil)
                }
            }
            active = false
            return
        }
        if readHeld && !closeWhenDrained && answers.count < maxInFlight / 2 {
            readHeld = false
            context.read()
        }
    }

    private func scheduleFlush(context: ChannelHandlerContext) {
        guard !flushScheduled else { return }
        flushScheduled = true
        let loopBound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        context.eventLoop.assumeIsolated().execute {
            loopBound.value.handler.flushScheduled = false
            loopBound.value.context.flush()
        }
    }

    /// After the last answer of a graceful shutdown (see `LingeringClose`).
    private func linger(context: ChannelHandlerContext) {
        lingering = true
        LingeringClose.start(context: context)
    }

    func read(context: ChannelHandlerContext) {
        if lingering {
            context.read()
            return
        }
        if closeWhenDrained || answers.count >= maxInFlight {
            readHeld = true
            return
        }
        context.read()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            // Idle terminal: nothing sent for the idle timeout and nothing owed to it.
            if answers.isEmpty {
                logger.debug("closing an idle terminal connection")
                context.close(promise: nil)
            }
            return
        }
        if lingering && event as? ChannelEvent == .inputClosed {
            context.close(promise: nil)
            return
        }
        if event is ChannelShouldQuiesceEvent || event as? ChannelEvent == .inputClosed {
            // Graceful shutdown, or the terminal finished sending (half-close):
            // answer what was accepted, then close.
            if event is ChannelShouldQuiesceEvent && !closeWhenDrained { quiescing = true }
            closeWhenDrained = true
            readHeld = true
            writeReady(context: context)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    /// The terminal does not read its answers fast enough: the outbound
    /// buffer passed its high-water mark. Close rather than buffer without bound.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if !context.channel.isWritable {
            logger.warning("closing a terminal that does not read its answers", metadata: ["remote": "\(context.remoteAddress.map { "\($0)" } ?? "-")"])
            active = false
            context.close(promise: nil)
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        active = false
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        logger.debug("terminal connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
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
