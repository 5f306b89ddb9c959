import AuthorizerCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOPosix
import NIOSSL

extension Listener {
    /// Largest ISO 8583 message accepted (a length prefix that says more closes the link).
    public static let maxISO8583MessageLength = 16 * 1024

    /// The port for acquirer links speaking ISO 8583 (2-byte big-endian
    /// length prefix, ASCII packager: see `ISO8583`). Same authorizer, same
    /// decisions as the terminal port; answers leave as soon as decided.
    public static func iso8583(
        group: EventLoopGroup, authorizer: Authorizer, limits: Limits,
        maxMessageLength: Int = maxISO8583MessageLength, logger: Logger
    ) -> EventLoopFuture<Listener> {
        start(group: group, limits: limits, connectionsName: "ISO 8583 links", metrics: authorizer.metrics, logger: logger) { channel in
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(ISO8583Framer(maxLength: maxMessageLength)))
            try channel.pipeline.syncOperations.addHandler(
                ISO8583Handler(authorizer: authorizer, maxInFlight: limits.maxInFlightPerConnection, logger: logger)
            )
        }
    }
}

/// A message's bytes (without the length prefix), or the news that a
/// length prefix announced more than the limit.
enum ISO8583Frame {
    case message(ByteBuffer)
    case tooLong(Int)
}

/// Splits the stream at 2-byte big-endian length prefixes, bounded by
/// `maxLength`. A zero length is skipped (a keep-alive). After a prefix over
/// the limit everything else on the link is dropped (the handler closes it).
struct ISO8583Framer: ByteToMessageDecoder {
    typealias InboundOut = ISO8583Frame

    let maxLength: Int
    private var discarding = false

    init(maxLength: Int) {
        precondition(maxLength > 0)
        self.maxLength = maxLength
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        if discarding {
            buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
            return .needMoreData
        }
        guard let prefix = buffer.getInteger(at: buffer.readerIndex, endianness: .big, as: UInt16.self) else {
            return .needMoreData
        }
        let length = Int(prefix)
        guard length <= maxLength else {
            discarding = true
            buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
            context.fireChannelRead(wrapInboundOut(.tooLong(length)))
            return .needMoreData
        }
        guard buffer.readableBytes >= 2 + length else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 2)
        let message = buffer.readSlice(length: length)!
        if length > 0 {
            context.fireChannelRead(wrapInboundOut(.message(message)))
        }
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws -> DecodingState {
        // A message cut short by the end of the stream gets no answer.
        while try decode(context: context, buffer: &buffer) == .continue {}
        buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
        return .needMoreData
    }
}

/// Serves one ISO 8583 link: decodes each message, translates it into the
/// authorizer's request, and writes each answer as soon as it is decided
/// (answers may leave in any order; the acquirer matches them by STAN/RRN).
///
/// At most `maxInFlight` requests are decided at once; messages read past
/// the limit wait and reading stops until they are taken up
/// (`ConnectionLifecycle` holds those rules, the same as the terminal
/// port's). This handler keeps the ISO 8583 codec and its translation.
final class ISO8583Handler: LifecycleHandler {
    typealias InboundIn = ISO8583Frame
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let authorizer: Authorizer
    let logger: Logger
    var lifecycle: ConnectionLifecycle<ISO8583Inbound>
    static let connectionName = "iso8583 link"
    /// Requests finished while `finished` is running (a decision that
    /// completed at once): its loop reports them, so that parked messages
    /// are taken up in order and without recursion.
    private var finishedMeanwhile = 0
    private var reporting = false

    init(authorizer: Authorizer, maxInFlight: Int, logger: Logger) {
        precondition(maxInFlight > 0)
        self.authorizer = authorizer
        self.logger = logger
        self.lifecycle = ConnectionLifecycle(maxInFlight: maxInFlight)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard lifecycle.acceptsFrames else { return }  // not decoded: it would be dropped
        let inbound = ISO8583Inbound(unwrapInboundIn(data))
        let action = inbound.endsLink ? lifecycle.fatalFrameDecoded(inbound) : lifecycle.frameDecoded(inbound)
        if case .dispatch(let inbound) = action {
            start(inbound, context: context)
        }
    }

    /// Takes one message up: answers it at once, or asks the authorizer. A
    /// message that ends the link is logged and counted here; the lifecycle
    /// closes the link once the answers before it are written.
    func start(_ inbound: ISO8583Inbound, context: ChannelHandlerContext) {
        let receivedAt = NIODeadline.now()
        switch inbound {
        case .tooLong(let length):
            logger.warning("iso8583 link closed", metadata: ["reason": "message length \(length) over the limit"])
            authorizer.metrics.requestDecided(.rejected, .lineTooLong)
        case .unreadable(let error):
            authorizer.metrics.requestDecided(.rejected, .invalidRequest)
            logger.warning("iso8583 link closed", metadata: ["reason": "unreadable message: \(error.reason)"])
        case .formatError(let answer, let error):
            authorizer.metrics.requestDecided(.rejected, .invalidRequest)
            logger.warning("request refused", metadata: ["channel": "iso8583", "stan": "\(error.fields[11] ?? "")", "reason": "\(error.reason)"])
            send(answer, receivedAt: receivedAt, context: context)
        case .unanswerable(let mti):
            logger.warning("iso8583 link closed", metadata: ["reason": "MTI \(mti) cannot be answered"])
        case .refused(let answer, let request, let refusal):
            logger.warning("request refused", metadata: ["channel": "iso8583", "stan": "\(request[11] ?? "")", "rrn": "\(request[37] ?? "")", "reason": "\(refusal.reason)"])
            authorizer.metrics.requestDecided(.rejected, .invalidRequest)
            send(answer, receivedAt: receivedAt, context: context)
        case .echo(let answer):
            if let answer { send(answer, receivedAt: receivedAt, context: context) }
        case .request(let message, let request):
            decide(request, of: message, receivedAt: receivedAt, context: context)
            return
        }
        finished(1, context: context)
    }

    private func decide(
        _ request: TerminalRequest, of message: ISO8583.Message,
        receivedAt: NIODeadline, context: ChannelHandlerContext
    ) {
        let loopBound = NIOLoopBound((handler: self, context: context), eventLoop: context.eventLoop)
        authorizer.handle(request, receivedAt: receivedAt)
            .hop(to: context.eventLoop)
            .whenComplete { result in
                let handler = loopBound.value.handler
                let decision: Decision
                switch result {
                case .success(let value): decision = value
                case .failure(let error):
                    decision = .rejected(.internalError("\(error)"))
                    handler.logger.warning("declined", metadata: ["account": "\(request.holderShown)", "id": "\(request.id)", "reason": "\(decision.reason ?? "")"])
                }
                handler.authorizer.metrics.requestDecided(decision)
                let code = ISO8583Translator.responseCode(for: decision)
                handler.logger.debug("decided", metadata: ["channel": "iso8583", "account": "\(request.holderShown)", "id": "\(request.id)", "code": "\(code)"])
                if let answer = ISO8583Translator.answer(to: message, code: code, balances: decision.balances) {
                    handler.send(answer, receivedAt: receivedAt, context: loopBound.value.context)
                }
                handler.finished(1, context: loopBound.value.context)
            }
    }

    /// Writes one answer, length-prefixed; flushes once per tick.
    private func send(_ answer: ISO8583.Message, receivedAt: NIODeadline, context: ChannelHandlerContext) {
        guard lifecycle.writesAnswers else { return }
        let bytes: [UInt8]
        do {
            bytes = try ISO8583.encode(answer)
        } catch {
            logger.error("iso8583 answer could not be encoded", metadata: ["error": "\(error)"])
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: bytes.count + 2)
        buffer.writeInteger(UInt16(bytes.count), endianness: .big)
        buffer.writeBytes(bytes)
        authorizer.metrics.requestAnswered(receivedAt: receivedAt)
        context.write(wrapOutboundOut(buffer), promise: nil)
        if lifecycle.answerWritten() { scheduleFlush(context: context) }
    }

    /// `count` requests are answered (or owed no answer): their places go to
    /// parked messages, and the link may read again or end. Not reentrant:
    /// requests finished meanwhile are reported by the running loop.
    private func finished(_ count: Int, context: ChannelHandlerContext) {
        finishedMeanwhile += count
        guard !reporting else { return }
        reporting = true
        defer { reporting = false }
        while finishedMeanwhile > 0 {
            let count = finishedMeanwhile
            finishedMeanwhile = 0
            perform(lifecycle.requestsFinished(count), context: context)
        }
    }
}

/// A framed message as the link takes it up, read when it arrives so that
/// one that ends the link is known before anything after it is accepted.
/// What it leads to (logs, metrics, the answer, the request) happens when it
/// is dispatched.
enum ISO8583Inbound {
    /// The length prefix announced more than the limit.
    case tooLong(Int)
    /// Neither MTI nor STAN could be read: nothing the acquirer could match an answer to.
    case unreadable(ISO8583.DecodeError)
    /// Unreadable, but its MTI and STAN are known: answered DE39 `30`.
    case formatError(answer: ISO8583.Message, error: ISO8583.DecodeError)
    /// Readable, but its MTI has no answer MTI (an answer sent as a request).
    case unanswerable(mti: String)
    /// Refused without asking the authorizer.
    case refused(answer: ISO8583.Message, request: ISO8583.Message, refusal: ISO8583Refusal)
    /// 0800: answered at once without touching Redis.
    case echo(answer: ISO8583.Message?)
    /// A request for the authorizer.
    case request(ISO8583.Message, TerminalRequest)

    init(_ frame: ISO8583Frame) {
        switch frame {
        case .tooLong(let length):
            self = .tooLong(length)
        case .message(let bytes):
            switch bytes.withUnsafeReadableBytes({ ISO8583.decode($0) }) {
            case .failure(let error):
                if let mti = error.mti, error.fields[11] != nil,
                   let answer = ISO8583Translator.answer(to: ISO8583.Message(mti: mti, fields: error.fields), code: ISO8583ResponseCode.formatError) {
                    self = .formatError(answer: answer, error: error)
                } else {
                    self = .unreadable(error)
                }
            case .success(let message):
                self = .interpreting(message)
            }
        }
    }

    /// A message that could be read: what the translator makes of it.
    private static func interpreting(_ message: ISO8583.Message) -> ISO8583Inbound {
        switch ISO8583Translator.interpret(message) {
        case .failure(let refusal):
            guard let answer = ISO8583Translator.answer(to: message, code: refusal.code) else {
                return .unanswerable(mti: message.mti)
            }
            return .refused(answer: answer, request: message, refusal: refusal)
        case .success(let operation):
            switch operation {
            case .echo: return .echo(answer: ISO8583Translator.answer(to: message, code: ISO8583ResponseCode.approved))
            case .request(let request): return .request(message, request)
            }
        }
    }

    /// The link cannot go on after it.
    var endsLink: Bool {
        switch self {
        case .tooLong, .unreadable, .unanswerable: return true
        case .formatError, .refused, .echo, .request: return false
        }
    }
}
