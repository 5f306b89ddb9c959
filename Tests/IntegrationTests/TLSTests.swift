import Foundation
import XCTest

/// Terminals over TLS with client certificates, from a CA made at test time.
final class TLSTests: XCTestCase {
    var redis: RedisServer!
    var certificates: URL!

    override func setUpWithError() throws {
        redis = try RedisServer(name: "tls")
        certificates = redis.directory.appendingPathComponent("pki")
        try FileManager.default.createDirectory(at: certificates, withIntermediateDirectories: true)
        let script = """
        set -e
        cd "\(certificates.path)"
        key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1" 2>/dev/null; }
        key ca.key
        openssl req -x509 -new -key ca.key -out ca.pem -days 2 -subj /CN=test-terminal-ca
        for name in server terminal; do
          key $name.key
          openssl req -new -key $name.key -out $name.csr -subj /CN=$name
          printf 'subjectAltName=IP:127.0.0.1\\n' > $name.ext
          openssl x509 -req -in $name.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $name.pem -days 2 -extfile $name.ext 2>/dev/null
        done
        key stranger-ca.key
        openssl req -x509 -new -key stranger-ca.key -out stranger-ca.pem -days 2 -subj /CN=stranger-ca
        key stranger.key
        openssl req -new -key stranger.key -out stranger.csr -subj /CN=stranger
        openssl x509 -req -in stranger.csr -CA stranger-ca.pem -CAkey stranger-ca.key -CAcreateserial -out stranger.pem -days 2 2>/dev/null
        """
        let child = ChildProcess(name: "pki", executable: "/bin/bash", arguments: ["-c", script])
        try child.start()
        XCTAssertEqual(child.waitForExit(), 0, child.output)
        try runAuthorizer(["rules", "init", "--redis", redis.url])
        try redis.setBalances("tls", ["FOOD": 1_000])
    }

    override func tearDown() {
        redis = nil
    }

    private func path(_ name: String) -> String { certificates.appendingPathComponent(name).path }

    private func startServe() throws -> ServeProcess {
        try ServeProcess(redis: redis, arguments: [
            "--tls-cert", path("server.pem"), "--tls-key", path("server.key"), "--tls-client-ca", path("ca.pem"),
        ])
    }

    private func terminal(port: Int, certificate: String?) throws -> ChildProcess {
        var arguments = ["s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", path("ca.pem"), "-verify_return_error", "-quiet"]
        if let certificate { arguments += ["-cert", path("\(certificate).pem"), "-key", path("\(certificate).key")] }
        let client = ChildProcess(name: "s_client", executable: "/usr/bin/openssl", arguments: arguments)
        try client.start()
        return client
    }

    func testTerminalWithACertificateFromTheCAIsServed() throws {
        let serve = try startServe()
        let client = try terminal(port: serve.port, certificate: "terminal")
        defer { client.terminate(signal: SIGKILL) }
        client.write(Request.line(id: "tls-1", account: "tls", amount: "2.50", mcc: "5411") + "\n")
        XCTAssertTrue(client.waitForLine(containing: #"{"id":"tls-1","code":"00"}"#), client.output)
        XCTAssertEqual(try redis.balances("tls"), ["FOOD": 750])
    }

    func testTerminalsWithoutAnAcceptedCertificateAreRefused() throws {
        let serve = try startServe()
        for certificate in [nil, "stranger"] {
            let client = try terminal(port: serve.port, certificate: certificate)
            client.write(Request.line(id: "nope", account: "tls", amount: "1.00", mcc: "5411") + "\n")
            XCTAssertNotNil(client.waitForExit(), "the server ends the handshake")
            XCTAssertFalse(client.output.contains("\"code\""), client.output)
        }
        // Plain TCP gets no answer either.
        let plain = try TerminalClient(port: serve.port, receiveTimeout: 5)
        try plain.sendLine(Request.line(id: "plain", account: "tls", amount: "1.00", mcc: "5411"))
        XCTAssertFalse((try? plain.readLine())??.contains("\"code\"") ?? false)
        XCTAssertEqual(try redis.balances("tls"), ["FOOD": 1_000])
    }

    /// `--tls-cert`/`--tls-key` without `--tls-client-ca`: the connection is
    /// encrypted but no client certificate is asked for, so a plain TLS
    /// client is served; plain TCP still gets nothing.
    func testWithoutAClientCAATerminalWithoutACertificateIsServedAndPlainTCPIsNot() throws {
        let serve = try ServeProcess(redis: redis, arguments: ["--tls-cert", path("server.pem"), "--tls-key", path("server.key")])
        let client = try terminal(port: serve.port, certificate: nil)
        defer {
            client.terminate(signal: SIGKILL)
            _ = client.waitForExit(timeout: 5)
        }
        client.write(Request.line(id: "open-1", account: "tls", amount: "2.50", mcc: "5411") + "\n")
        XCTAssertTrue(client.waitForLine(containing: #"{"id":"open-1","code":"00"}"#), client.output)
        XCTAssertEqual(try redis.balances("tls"), ["FOOD": 750])

        let plain = try TerminalClient(port: serve.port, receiveTimeout: 5)
        try plain.sendLine(Request.line(id: "plain", account: "tls", amount: "1.00", mcc: "5411"))
        let answer: String?
        do {
            answer = try plain.readLine()
        } catch {
            answer = nil  // no answer within the timeout
        }
        XCTAssertFalse(answer?.contains("\"code\"") ?? false, answer ?? "")
        XCTAssertEqual(try redis.balances("tls"), ["FOOD": 750], "plain TCP moved no money")
    }

    /// `authorizer send` over TLS: served with a certificate from the CA,
    /// exit 2 without one or when the server's certificate is not trusted.
    func testSendOverTLS() throws {
        let serve = try startServe()
        let target = "127.0.0.1:\(serve.port)"
        let request = ["--account", "tls", "--amount", "2.50", "--mcc", "5411", "--merchant", "MERCADO", "--timeout-ms", "5000"]
        let served = try runAuthorizer(
            ["send", "--target", target, "--tls-ca", path("ca.pem"), "--tls-cert", path("terminal.pem"), "--tls-key", path("terminal.key"), "--id", "tls-send"] + request,
            expectSuccess: false
        )
        XCTAssertEqual(served.status, 0, served.output)
        XCTAssertTrue(served.output.contains(#"{"id":"tls-send","code":"00"}"#), served.output)
        XCTAssertEqual(try redis.balances("tls"), ["FOOD": 750])

        let noCertificate = try runAuthorizer(["send", "--target", target, "--tls-ca", path("ca.pem"), "--id", "tls-x"] + request, expectSuccess: false)
        XCTAssertEqual(noCertificate.status, 2, noCertificate.output)
        let untrusted = try runAuthorizer(
            ["send", "--target", target, "--tls-ca", path("stranger-ca.pem"), "--tls-cert", path("terminal.pem"), "--tls-key", path("terminal.key"), "--id", "tls-y"] + request,
            expectSuccess: false
        )
        XCTAssertEqual(untrusted.status, 2, untrusted.output)
        let plain = try runAuthorizer(["send", "--target", target, "--timeout-ms", "1000", "--id", "tls-z"] + request.dropLast(2), expectSuccess: false)
        XCTAssertEqual(plain.status, 2, plain.output)
        XCTAssertEqual(try redis.balances("tls"), ["FOOD": 750], "only the first moved money")
    }

    /// The ISO 8583 port takes the same TLS options: pyiso8583 over TLS with
    /// a client certificate from the CA is served; one from another CA is not.
    func testISO8583LinkOverTLSWithAClientCertificate() throws {
        let check = Process()
        check.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        check.arguments = ["python3", "-c", "import iso8583"]
        check.standardOutput = FileHandle.nullDevice
        check.standardError = FileHandle.nullDevice
        do { try check.run() } catch { throw XCTSkip("python3 is not installed") }
        check.waitUntilExit()
        guard check.terminationStatus == 0 else { throw XCTSkip("pyiso8583 is not installed (pip install pyiso8583)") }
        try redis.setBalances("4242", ["FOOD": 1_000])
        let serve = try ServeProcess(redis: redis, arguments: [
            "--tls-cert", path("server.pem"), "--tls-key", path("server.key"), "--tls-client-ca", path("ca.pem"), "--iso8583-port", "0", "--iso-pan-as-account",
        ])
        let script = TestEnvironment.repositoryRoot.appendingPathComponent("scripts/iso8583_interop.py").path
        func run(_ certificate: String) throws -> (status: Int32?, output: String) {
            let child = ChildProcess(name: "python", executable: "/usr/bin/env", arguments: [
                "python3", script, "--port", "\(try XCTUnwrap(serve.iso8583Port))", "--pan", "4242", "--amount", "100",
                "--tls-ca", path("ca.pem"), "--tls-cert", path("\(certificate).pem"), "--tls-key", path("\(certificate).key"),
            ])
            try child.start()
            let status = child.waitForExit(timeout: 30)
            if status == 0 { child.waitForLine(containing: "interop ok", timeout: 2) }
            return (status, child.output)
        }
        let served = try run("terminal")
        XCTAssertEqual(served.status, 0, served.output)
        XCTAssertTrue(served.output.contains("interop ok"), served.output)
        let stranger = try run("stranger")
        XCTAssertNotEqual(stranger.status, 0, stranger.output)
        XCTAssertEqual(try redis.balances("4242"), ["FOOD": 900])
    }
}
