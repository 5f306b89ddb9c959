import AuthorizerCore
import NIOCore
import NIOExtras

/// One terminal connection under load: sends on its timetable (open loop) or
/// as answers come back (closed loop), at most `pipeline` in flight, and
/// matches each answer line to the oldest request in flight.
final class LoadConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private struct InFlight {
        /// Open loop: the intended send time, so queueing anywhere counts.
        let sentAt: UInt64
        let sequence: UInt64
    }

    private let worker: Worker
    let number: Int
    private var context: ChannelHandlerContext?
    private var inFlight: CircularBuffer<InFlight>
    /// ISO 8583: answers come in any order, matched by STAN.
    private var isoInFlight: [UInt64: InFlight] = [:]
    private var inFlightCount: Int { worker.options.wire == .iso8583 ? isoInFlight.count : inFlight.count }
    private var next: UInt64 = 0
    private var timetable: (first: Double, interval: Double, count: UInt64) = (0, 0, 0)
    private var timer: Scheduled<Void>?
    private var started = false
    private var finished = false

    private static let maxLineLength = 64 * 1024

    init(worker: Worker, number: Int) {
        self.worker = worker
        self.number = number
        self.inFlight = CircularBuffer(initialCapacity: worker.options.pipeline)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        worker.add(self)
    }

    func start() {
        started = true
        if !worker.options.closedLoop { timetable = worker.timetable(for: number) }
        if finished {
            settle()  // lost before the start
            return
        }
        pump(now: NIODeadline.now().uptimeNanoseconds)
    }

    private func intended(_ sequence: UInt64) -> UInt64 {
        worker.startNanos + UInt64(timetable.first + Double(sequence) * timetable.interval)
    }

    /// Sends whatever is due, within the in-flight bound, in one write.
    private func pump(now: UInt64) {
        guard let context, started, !finished else { return }
        let pipeline = worker.options.pipeline
        let closedLoop = worker.options.closedLoop
        var out: ByteBuffer?
        while inFlightCount < pipeline {
            let sentAt: UInt64
            if closedLoop {
                guard now < worker.stopNanos else { break }
                sentAt = now
            } else {
                guard next < timetable.count else { break }
                sentAt = intended(next)
                guard sentAt <= now else { break }
            }
            if out == nil { out = context.channel.allocator.buffer(capacity: 160 * (pipeline - inFlightCount)) }
            worker.writeRequest(connection: number, sequence: next, into: &out!)
            if worker.options.wire == .iso8583 {
                isoInFlight[next % 1_000_000] = InFlight(sentAt: sentAt, sequence: next)
            } else {
                inFlight.append(InFlight(sentAt: sentAt, sequence: next))
            }
            next += 1
        }
        if let out { context.writeAndFlush(wrapOutboundOut(out), promise: nil) }
        if !closedLoop && timer == nil && next < timetable.count && inFlightCount < pipeline {
            let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
            timer = context.eventLoop.scheduleTask(deadline: .uptimeNanoseconds(intended(next))) {
                bound.value.timer = nil
                bound.value.pump(now: NIODeadline.now().uptimeNanoseconds)
            }
        }
        let nothingLeft = closedLoop ? now >= worker.stopNanos : next >= timetable.count
        if nothingLeft && inFlightCount == 0 { finish() }
    }

    /// One answer: a line (without its newline) or an ISO 8583 message
    /// (without its length prefix), framed by the decoder in front.
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        let now = NIODeadline.now().uptimeNanoseconds
        if worker.options.wire == .iso8583 {
            isoAnswer(frame, at: now)
        } else {
            answer(frame.readableBytesView, at: now)
        }
    }

    /// What a read brought is answered: send what is now due, in one write.
    func channelReadComplete(context: ChannelHandlerContext) {
        pump(now: NIODeadline.now().uptimeNanoseconds)
    }

    /// The decoder in front of a connection: lines, or length-prefixed ISO 8583 messages.
    static func decoder(for wire: LoadProtocol) -> ChannelHandler {
        switch wire {
        case .line:
            return ByteToMessageHandler(LineBasedFrameDecoder(), maximumBufferSize: maxLineLength)
        case .iso8583:
            return ByteToMessageHandler(
                LengthFieldBasedFrameDecoder(lengthFieldLength: .two, lengthFieldEndianness: .big), maximumBufferSize: maxLineLength
            )
        }
    }

    private func answer(_ line: ByteBufferView, at now: UInt64) {
        guard let head = inFlight.popFirst() else {
            worker.error("answer with no request in flight")
            return
        }
        guard let code = Self.stringField("code", in: line), code.count == 2 else {
            worker.error("unreadable answer")
            return
        }
        var expected = ByteBuffer()
        worker.writeID(connection: number, sequence: head.sequence, into: &expected)
        guard let id = Self.stringField("id", in: line), id.elementsEqual(expected.readableBytesView) else {
            worker.error("answer id does not match the request in order")
            return
        }
        let reason = code.elementsEqual("07".utf8) ? Self.stringField("reason", in: line).map { String(decoding: $0, as: UTF8.self) } : nil
        worker.answered(code: String(decoding: code, as: UTF8.self), reason: reason, latency: now &- min(now, head.sentAt), at: now)
    }

    private func isoAnswer(_ body: ByteBuffer, at now: UInt64) {
        let decoded = body.withUnsafeReadableBytes { ISO8583.decode($0) }
        guard case .success(let message) = decoded, let code = message[39], code.count == 2,
              let stanText = message[11], let stan = UInt64(stanText) else {
            worker.error("unreadable answer")
            return
        }
        guard let request = isoInFlight.removeValue(forKey: stan) else {
            worker.error("answer with no request in flight")
            return
        }
        guard message[37] == worker.isoRRN(connection: number, sequence: request.sequence) else {
            worker.error("answer RRN does not match its STAN")
            return
        }
        worker.answered(code: code, reason: nil, latency: now &- min(now, request.sentAt), at: now)
    }

    /// The raw text of `"name":"…"` in the compact JSON the server writes.
    static func stringField(_ name: String, in line: ByteBufferView) -> ByteBufferView.SubSequence? {
        let key = Array("\"\(name)\":\"".utf8)
        var index = line.startIndex
        while index + key.count <= line.endIndex {
            if line[index..<(index + key.count)].elementsEqual(key) {
                let start = index + key.count
                var end = start
                while end < line.endIndex && line[end] != UInt8(ascii: "\"") {
                    end += line[end] == UInt8(ascii: "\\") ? 2 : 1
                }
                return end <= line.endIndex ? line[start..<end] : nil
            }
            index += 1
        }
        return nil
    }

    /// Gives up on this connection: what is in flight or still due counts as errors.
    func abandon(_ problem: String) {
        guard !finished else { return }
        worker.error(problem, count: inFlightCount)
        inFlight.removeAll()
        isoInFlight.removeAll()
        finish()
        close()
    }

    func channelInactive(context: ChannelHandlerContext) {
        abandon("connection closed by the server")
        self.context = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        abandon("connection error: \(error)")
    }

    private func finish() {
        guard !finished else { return }
        finished = true
        timer?.cancel()
        timer = nil
        if started { settle() }
    }

    private func settle() {
        if !worker.options.closedLoop && next < timetable.count {
            worker.error("not sent (connection lost or backlog at the end)", count: Int(timetable.count - next))
        }
        worker.connectionFinished()
    }

    func close() {
        guard let context else { return }
        self.context = nil
        context.close(promise: nil)
    }
}
