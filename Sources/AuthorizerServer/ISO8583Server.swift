import AuthorizerCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOExtras
import NIOPosix
import NIOSSL

/// The TCP listener for acquirer links speaking ISO 8583 (2-byte big-endian
/// length prefix, ASCII packager: see `ISO8583`). Same authorizer, same
/// decisions as the terminal port; only the front differs.
public final class ISO8583Server: Sendable {
    public struct Options: Sendable {
        public var host = "127.0.0.1"
        public var port = 7071
        /// Links open at once; more are refused.
        public var maxLinks = 20_000
        /// Requests of one link being decided at once; past it the link is not read until answers leave.
        public var maxInFlightPerLink = 1_024
        /// Largest message accepted (the length prefix says more: the link is closed).
        public var maxMessageLength = 16 * 1024
        public var maxWriteBufferBytes = 1 << 20
        public var idleTimeout: TimeAmount? = .seconds(300)
        public var tls: NIOSSLContext?
        public init() {}
    }

    private let listener: Listener

    public var localPort: Int? { listener.localPort }

    private init(listener: Listener) {
        self.listener = listener
    }

    public static func start(group: EventLoopGroup, authorizer: Authorizer, options: Options, logger: Logger) -> EventLoopFuture<ISO8583Server> {
        let limits = Listener.Limits(
            host: options.host, port: options.port, maxConnections: options.maxLinks,
            maxWriteBufferBytes: options.maxWriteBufferBytes, idleTimeout: options.idleTimeout, tls: options.tls,
            connectionsName: "ISO 8583 links"
        )
        return Listener.start(group: group, limits: limits, metrics: authorizer.metrics, logger: logger) { channel in
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(ISO8583Framer(maxLength: options.maxMessageLength)))
            try channel.pipeline.syncOperations.addHandler(
                ISO8583Handler(authorizer: authorizer, maxInFlight: options.maxInFlightPerLink, logger: logger)
            )
        }.map { ISO8583Server(listener: $0) }
    }

    /// Stops accepting, lets every connection answer what it accepted, and
    /// completes when all of them are closed.
    public func shutdown() -> EventLoopFuture<Void> {
        listener.shutdown()
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
final class ISO8583Handler: ChannelDuplexHandler {
    typealias InboundIn = ISO8583Frame
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let authorizer: Authorizer
    private let maxInFlight: Int
    private let logger: Logger

    private var inFlight = 0
    /// Messages read past the in-flight limit (one read can bring many):
    /// decided in order as answers leave, before the link is read again.
    private var parked = CircularBuffer<ByteBuffer>(initialCapacity: 16)
    private var readHeld = false
    private var closeWhenDrained = false
    /// A graceful shutdown asked for the close: linger after the last answer.
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
        guard !closeWhenDrained, !lingering else { return }
        switch unwrapInboundIn(data) {
        case .tooLong(let length):
            logger.warning("iso8583 link closed", metadata: ["reason": "message length \(length) over the limit"])
            authorizer.metrics.requestDecided(.rejected, .lineTooLong)
            closeWhenDrained = true
            drained(context: context)
        case .message(let bytes):
            if inFlight >= maxInFlight || !parked.isEmpty {
                parked.append(bytes)
                readHeld = true
            } else {
                handle(bytes, context: context)
            }
        }
    }

    private func handle(_ bytes: ByteBuffer, context: ChannelHandlerContext) {
        let receivedAt = NIODeadline.now()
        let decoded = bytes.withUnsafeReadableBytes { ISO8583.decode($0) }
        let message: ISO8583.Message
        switch decoded {
        case .failure(let error):
            authorizer.metrics.requestDecided(.rejected, .invalidRequest)
            guard let mti = error.mti, error.fields[11] != nil,
                  let answer = ISO8583Translator.answer(to: ISO8583.Message(mti: mti, fields: error.fields), code: ISO8583ResponseCode.formatError)
            else {
                // Neither MTI nor STAN: nothing the acquirer could match an answer to.
                logger.warning("iso8583 link closed", metadata: ["reason": "unreadable message: \(error.reason)"])
                closeWhenDrained = true
                drained(context: context)
                return
            }
            logger.warning("request refused", metadata: ["channel": "iso8583", "stan": "\(error.fields[11] ?? "")", "reason": "\(error.reason)"])
            send(answer, receivedAt: receivedAt, context: context)
            return
        case .success(let value):
            message = value
        }
        switch ISO8583Translator.interpret(message) {
        case .failure(let refusal):
            guard let answer = ISO8583Translator.answer(to: message, code: refusal.code) else {
                logger.warning("iso8583 link closed", metadata: ["reason": "MTI \(message.mti) cannot be answered"])
                closeWhenDrained = true
                drained(context: context)
                return
            }
            logger.warning("request refused", metadata: ["channel": "iso8583", "stan": "\(message[11] ?? "")", "rrn": "\(message[37] ?? "")", "reason": "\(refusal.reason)"])
            authorizer.metrics.requestDecided(.rejected, .invalidRequest)
            send(answer, receivedAt: receivedAt, context: context)
        case .success(.echo):
            if let answer = ISO8583Translator.answer(to: message, code: ISO8583ResponseCode.approved) {
                send(answer, receivedAt: receivedAt, context: context)
            }
        case .success(let operation):
            let request: TerminalRequest
            switch operation {
            case .authorization(let value): request = .authorization(value)
            case .reversal(let value): request = .reversal(value)
            case .balance(let value): request = .balance(value)
            case .echo: return
            }
            inFlight += 1
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
                        handler.logger.warning("declined", metadata: ["account": "\(request.account)", "id": "\(request.id)", "reason": "\(decision.reason ?? "")"])
                    }
                    handler.authorizer.metrics.requestDecided(decision)
                    handler.inFlight -= 1
                    let code = ISO8583Translator.responseCode(for: decision, of: operation)
                    handler.logger.debug("decided", metadata: ["channel": "iso8583", "account": "\(request.account)", "id": "\(request.id)", "code": "\(code)"])
                    if let answer = ISO8583Translator.answer(to: message, code: code, balances: decision.balances) {
                        handler.send(answer, receivedAt: receivedAt, context: loopBound.value.context)
                    }
                    handler.drained(context: loopBound.value.context)
                }
        }
    }

    /// Writes one answer, length-prefixed; flushes once per tick.
    private func send(_ answer: ISO8583.Message, receivedAt: NIODeadline, context: ChannelHandlerContext) {
        guard active else { return }
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
        scheduleFlush(context: context)
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

    /// Closes once everything accepted is answered (when closing), and
    /// resumes reading once in-flight requests drained below half the limit.
    private func drained(context: ChannelHandlerContext) {
        guard active else { return }
        while inFlight < maxInFlight, !parked.isEmpty, active {
            handle(parked.removeFirst(), context: context)
        }
        guard active else { return }
        if closeWhenDrained {
            guard inFlight == 0, parked.isEmpty else { return }
            active = false
            let quiescing = self.quiescing
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).assumeIsolated().whenComplete { _ in
                if quiescing {
                    self.lingering = true
                    LingeringClose.start(context: context)
                } else {
                    context.close(promise: nil)
                }
            }
            return
        }
        if readHeld && parked.isEmpty && inFlight < maxInFlight / 2 {
            readHeld = false
            context.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if lingering {
            context.read()
            return
        }
        if closeWhenDrained || inFlight >= maxInFlight || !parked.isEmpty {
            readHeld = true
            return
        }
        context.read()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read {
            if inFlight == 0 {
                logger.debug("closing an idle iso8583 link")
                context.close(promise: nil)
            }
            return
        }
        if lingering && event as? ChannelEvent == .inputClosed {
            context.close(promise: nil)
            return
        }
        if event is ChannelShouldQuiesceEvent || event as? ChannelEvent == .inputClosed {
            if event is ChannelShouldQuiesceEvent && !closeWhenDrained { quiescing = true }
            closeWhenDrained = true
            readHeld = true
            drained(context: context)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if !context.channel.isWritable {
            logger.warning("closing an iso8583 link that does not read its answers", metadata: ["remote": "\(context.remoteAddress.map { "\($0)" } ?? "-")"])
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
        logger.debug("iso8583 link error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}
