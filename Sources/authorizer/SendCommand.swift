import ArgumentParser
import AuthorizerCore
import Foundation
import NIOCore
import NIOExtras
import NIOPosix
import NIOSSL

/// A terminal for people and scripts: sends one request (or several lines,
/// pipelined on one connection) to a running `serve` and prints the answers
/// in order.
struct Send: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send a transaction to a running serve and print the answer.",
        discussion: """
        Either build the request from --account, --amount, --mcc and --merchant \
        (and --id), or pass raw JSON lines as arguments, or pipe them on standard \
        input; several lines go out on one connection and their answers are \
        printed in the same order. The amount is sent exactly as typed (digits, \
        at most two decimals). Exit status: 0 when every answer is 00, 1 when any \
        is not (51, 07), 2 when the request could not be made or answered \
        (bad arguments, connection refused, TLS failure, --timeout-ms passed).
        """
    )

    /// Exit statuses, a contract for scripts.
    static let approved: Int32 = 0
    static let declined: Int32 = 1
    static let transportFailure: Int32 = 2

    @Option(help: "Terminal server, host:port (env AUTHORIZER_TARGET). Default 127.0.0.1:7070.")
    var target: String?

    @Option(help: "Account id.")
    var account: String?

    @Option(help: "The card: a PAN or a card id (crd_…), instead of --account or with it.")
    var card: String?

    @Option(help: "Amount, e.g. 100.10: digits and at most two decimals, sent exactly as written.")
    var amount: String?

    @Option(help: "Merchant category code, 4 digits.")
    var mcc: String?

    @Option(help: "Merchant descriptor, e.g. \"PADARIA DO ZE\".")
    var merchant: String?

    @Option(help: "Transaction id (the server makes one up when absent; a repeated id is answered with the first decision).")
    var id: String?

    @Argument(help: "Raw request lines (JSON). Without them and without --account, lines are read from standard input.")
    var lines: [String] = []

    @Option(help: "Give up (exit 2) when connecting and answering all the lines takes longer than this, in milliseconds.")
    var timeoutMs = 5_000

    @Flag(help: "Connect with TLS (implied by --tls-ca and --tls-cert).")
    var tls = false

    @Option(help: "Trust the server certificate only if this CA (PEM) signed it. Default: the system's trust store.")
    var tlsCa: String?

    @Option(help: "Client certificate chain (PEM), for a serve started with --tls-client-ca.")
    var tlsCert: String?

    @Option(help: "Private key (PEM) for --tls-cert.")
    var tlsKey: String?

    @Option(help: "Name to expect in the server certificate (and to send as SNI). Default: the --target host; an IP address is checked against the certificate's IP addresses.")
    var tlsServerName: String?

    func run() async throws {
        let target: HostPort
        let requests: [String]
        let timeout: TimeAmount
        do {
            target = try resolveTarget()
            requests = try buildRequests()
            guard (1...3_600_000).contains(timeoutMs) else { throw UsageError("--timeout-ms must be 1-3600000") }
            timeout = .milliseconds(Int64(timeoutMs))
        } catch let error as UsageError {
            throw Self.exit(Self.transportFailure, "error: \(error.message)")
        }
        guard !requests.isEmpty else { throw Self.exit(Self.transportFailure, "error: nothing to send") }

        let tlsContext: NIOSSLContext?
        do {
            tlsContext = try makeTLSContext()
        } catch {
            throw Self.exit(Self.transportFailure, "error: TLS configuration: \(error)")
        }

        let exchange = SendExchange(
            target: target, requests: requests, tls: tlsContext,
            serverName: tlsServerName, timeout: timeout, eventLoop: MultiThreadedEventLoopGroup.singleton.next()
        )
        let outcome = await exchange.run()
        // Printed here, off the event loop: stdout may be a slow pipe.
        for answer in outcome.answers { print(answer) }
        if let failure = outcome.failure {
            let missing = requests.count - outcome.answers.count
            throw Self.exit(
                Self.transportFailure,
                "error: \(target): \(failure)" + (missing > 0 ? " (\(missing) of \(requests.count) requests unanswered)" : "")
            )
        }
        let allApproved = outcome.answers.allSatisfy { Self.code(of: $0) == ResponseCode.approved.rawValue }
        if !allApproved { throw ExitCode(Self.declined) }
    }

    // MARK: - Arguments

    struct UsageError: Error {
        let message: String
        init(_ message: String) { self.message = message }
    }

    private static func exit(_ status: Int32, _ message: String) -> ExitCode {
        FileHandle.standardError.write(Data("\(message)\n".utf8))
        return ExitCode(status)
    }

    private func resolveTarget() throws -> HostPort {
        let text = target ?? ProcessInfo.processInfo.environment["AUTHORIZER_TARGET"] ?? "127.0.0.1:7070"
        guard let target = HostPort(text) else { throw UsageError("--target must be host:port, got \(text)") }
        return target
    }

    private var hasFields: Bool { account != nil || card != nil || amount != nil || mcc != nil || merchant != nil || id != nil }

    func buildRequests() throws -> [String] {
        if hasFields {
            guard lines.isEmpty else { throw UsageError("give either --account … or raw lines, not both") }
            return [try fieldsRequest()]
        }
        let text: String
        if !lines.isEmpty {
            text = lines.joined(separator: "\n")
        } else {
            if isatty(STDIN_FILENO) == 1 {
                FileHandle.standardError.write(Data("reading request lines from standard input (Ctrl-D to send)\n".utf8))
            }
            text = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        }
        // One request per non-blank line; a \r before the \n is dropped, as the server does.
        return text.split(separator: "\n", omittingEmptySubsequences: true)
            .map { $0.hasSuffix("\r") ? String($0.dropLast()) : String($0) }
            .filter { !$0.allSatisfy(\.isWhitespace) }
    }

    private func fieldsRequest() throws -> String {
        guard account != nil || card != nil, let amount, let mcc, let merchant else {
            throw UsageError("--account (or --card), --amount, --mcc and --merchant are all needed")
        }
        // Checked here from its digits so that a typo never reaches the server;
        // then sent exactly as typed, never through floating point.
        if case .failure(let problem) = Cents.parse(amount) {
            throw UsageError("--amount \(amount): \(problem)")
        }
        var fields: [(String, String)] = []
        if let id { fields.append(("id", Self.jsonString(id))) }
        if let account { fields.append(("account", Self.jsonString(account))) }
        if let card { fields.append(("card", Self.jsonString(card))) }
        fields.append(("totalAmount", amount))
        fields.append(("mcc", Self.jsonString(mcc)))
        fields.append(("merchant", Self.jsonString(merchant)))
        return "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped.
    static func jsonString(_ text: String) -> String {
        JSONText.quoted(text)
    }

    /// The `code` of an answer line, or nil when it has none.
    static func code(of answer: String) -> String? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any] else { return nil }
        return object["code"] as? String
    }

    private func makeTLSContext() throws -> NIOSSLContext? {
        guard tls || tlsCa != nil || tlsCert != nil || tlsKey != nil || tlsServerName != nil else { return nil }
        guard (tlsCert == nil) == (tlsKey == nil) else { throw UsageError("--tls-cert and --tls-key go together") }
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if let tlsCa { configuration.trustRoots = .file(tlsCa) }
        if let tlsCert, let tlsKey {
            let identity = try PEMIdentity(certificateFile: tlsCert, keyFile: tlsKey)
            configuration.certificateChain = identity.chain
            configuration.privateKey = identity.key
        }
        return try NIOSSLContext(configuration: configuration)
    }
}

extension Send.UsageError: CustomStringConvertible {
    var description: String { message }
}

/// One connection: every request written at once, the answers collected in
/// order until each request has one, the server closes, or the deadline.
/// Everything here runs on the event loop; the caller awaits the outcome.
final class SendExchange: @unchecked Sendable {
    struct Outcome {
        var answers: [String]
        var failure: String?
    }

    private let target: HostPort
    private let requests: [String]
    private let tls: NIOSSLContext?
    private let serverName: String?
    private let timeout: TimeAmount
    private let eventLoop: EventLoop
    /// The longest answer line read; a longer one ends the exchange.
    static let maxAnswerLength = 64 * 1024

    init(target: HostPort, requests: [String], tls: NIOSSLContext?, serverName: String?, timeout: TimeAmount, eventLoop: EventLoop) {
        self.target = target
        self.requests = requests
        self.tls = tls
        self.serverName = serverName
        self.timeout = timeout
        self.eventLoop = eventLoop
    }

    /// Resolves once every answer is in, the server closed, or the deadline.
    func run() async -> Outcome {
        let done = eventLoop.makePromise(of: Outcome.self)
        let collector = AnswerCollector(expected: requests.count, done: done)
        let deadline = eventLoop.scheduleTask(in: timeout) {
            collector.finish(failure: "no complete answer within \(self.timeout.nanoseconds / 1_000_000) ms")
        }
        let tls = self.tls
        let host = target.host
        let sni = serverName ?? (Self.isIPAddress(host) ? nil : host)
        ClientBootstrap(group: eventLoop)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: tls, serverHostname: sni))
                    }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(LineBasedFrameDecoder(), maximumBufferSize: Self.maxAnswerLength))
                    try channel.pipeline.syncOperations.addHandler(collector)
                }
            }
            .connect(host: target.host, port: target.port)
            .whenComplete { result in
                switch result {
                case .failure(let error as NIOConnectionError):
                    let cause = error.connectionErrors.first.map { "\($0.error)" } ?? error.dnsAAAAError.map { "\($0)" } ?? "\(error)"
                    collector.finish(failure: "cannot connect: \(cause)")
                case .failure(let error):
                    collector.finish(failure: "cannot connect: \(error)")
                case .success(let channel):
                    collector.attach(channel)
                    var buffer = channel.allocator.buffer(capacity: self.requests.reduce(0) { $0 + $1.utf8.count + 1 })
                    for request in self.requests {
                        buffer.writeString(request)
                        buffer.writeInteger(UInt8(ascii: "\n"))
                    }
                    channel.writeAndFlush(buffer).whenFailure { error in
                        collector.finish(failure: "cannot send: \(error)")
                    }
                }
            }
        let outcome = (try? await done.futureResult.get()) ?? Outcome(answers: [], failure: "interrupted")
        deadline.cancel()
        return outcome
    }

    static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }
}

/// Collects the answer lines; event-loop confined.
final class AnswerCollector: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer

    private let expected: Int
    private let done: EventLoopPromise<SendExchange.Outcome>
    private var answers: [String] = []
    private var finished = false
    private var channel: Channel?

    init(expected: Int, done: EventLoopPromise<SendExchange.Outcome>) {
        self.expected = expected
        self.done = done
    }

    func attach(_ channel: Channel) {
        if finished {
            channel.close(promise: nil)
        } else {
            self.channel = channel
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // One answer line (LineBasedFrameDecoder: without its \n or \r\n).
        answers.append(String(buffer: unwrapInboundIn(data)))
        if answers.count >= expected { finish(failure: nil) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(failure: "the server closed the connection")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        finish(failure: "\(error)")
        context.close(promise: nil)
    }

    /// First call wins: the answers so far and, unless all came, why not.
    func finish(failure: String?) {
        guard !finished else { return }
        finished = true
        let complete = answers.count >= expected
        done.succeed(.init(answers: answers, failure: complete ? nil : (failure ?? "incomplete")))
        channel?.close(promise: nil)
        channel = nil
    }
}
