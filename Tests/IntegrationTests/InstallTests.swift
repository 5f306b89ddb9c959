import Foundation
import XCTest

/// `scripts/install.sh` (what `make install` runs) into a temporary DESTDIR,
/// then `serve` from the install tree: from a working directory outside the
/// checkout, with the checkout fallback for the Lua scripts switched off, so
/// only the installed scripts can be found.
final class InstallTests: XCTestCase {
    var redis: RedisServer!
    var destdir: URL!

    override func setUpWithError() throws {
        redis = try RedisServer(name: "install", acl: true)
        try runAuthorizer(["rules", "init", "--redis", redis.url])
        try redis.setBalances("123", ["FOOD": 100_000, "MEAL": 100_000, "CASH": 100_000])
        destdir = try TestEnvironment.makeTemporaryDirectory("install")
        let install = ChildProcess(
            name: "install", executable: "/bin/bash",
            arguments: [
                TestEnvironment.repositoryRoot.appendingPathComponent("scripts/install.sh").path,
                TestEnvironment.authorizerBinary, destdir.path, "/usr", "/etc",
            ]
        )
        try install.start()
        XCTAssertEqual(install.waitForExit(timeout: 60), 0, install.output)
    }

    override func tearDown() {
        redis = nil
        if let destdir { try? FileManager.default.removeItem(at: destdir) }
    }

    private func installed(_ path: String) -> URL { destdir.appendingPathComponent(path) }

    /// The installed binary, run with no way back to the checkout.
    private func installedAuthorizer(_ arguments: [String], name: String = "installed") throws -> ChildProcess {
        let child = ChildProcess(
            name: name, executable: installed("usr/bin/authorizer").path, arguments: arguments,
            environment: ["AUTHORIZER_LUA_NO_CHECKOUT": "1", "AUTHORIZER_LUA_DIR": ""]
        )
        child.process.currentDirectoryURL = destdir
        try child.start()
        return child
    }

    func testTheLayoutFollowsThePrefixAndTheUnitPointsAtIt() throws {
        let manager = FileManager.default
        for path in [
            "usr/bin/authorizer", "usr/share/authorizer/lua/authorize.lua", "usr/share/authorizer/lua/unlock.lua",
            "usr/share/authorizer/lua/decline.lua", "usr/share/authorizer/lua/adjust.lua",
            "usr/share/authorizer/redis.conf", "usr/share/authorizer/rules.example.yaml",
            "usr/lib/systemd/system/authorizer.service", "etc/authorizer/authorizer.env",
        ] {
            XCTAssertTrue(manager.fileExists(atPath: installed(path).path), "\(path) installed")
        }
        XCTAssertTrue(manager.isExecutableFile(atPath: installed("usr/bin/authorizer").path))
        let unit = try String(contentsOf: installed("usr/lib/systemd/system/authorizer.service"), encoding: .utf8)
        XCTAssertTrue(unit.contains("\nExecStart=/usr/bin/authorizer serve $AUTHORIZER_SERVE_OPTIONS\n"), unit)
        XCTAssertTrue(unit.contains("\nEnvironmentFile=/etc/authorizer/authorizer.env\n"), unit)
        XCTAssertFalse(unit.contains("@"), "every placeholder filled in: \(unit)")
        let env = try manager.attributesOfItem(atPath: installed("etc/authorizer/authorizer.env").path)
        XCTAssertEqual((env[.posixPermissions] as? NSNumber)?.intValue, 0o600, "the env file holds a password")
        XCTAssertTrue(try String(contentsOf: installed("etc/authorizer/authorizer.env"), encoding: .utf8).contains("AUTHORIZER_REDIS_URL="))
    }

    func testServeFromTheInstallTreeAnswers() throws {
        let serve = try installedAuthorizer(["serve", "--redis", redis.url, "--port", "0", "--log-level", "info"], name: "serve")
        defer {
            serve.terminate(signal: SIGKILL)
            _ = serve.waitForExit(timeout: 5)
        }
        guard let listening = serve.line(containing: "authorizer listening"), let port = ServeProcess.port(in: listening) else {
            return XCTFail("installed serve did not start:\n\(serve.output)")
        }
        let scripts = try XCTUnwrap(serve.line(containing: "lua scripts loaded"), serve.output)
        XCTAssertTrue(scripts.contains(installed("usr/share/authorizer/lua").path), "scripts from the install tree: \(scripts)")
        XCTAssertFalse(scripts.contains(TestEnvironment.repositoryRoot.appendingPathComponent("Lua").path), scripts)

        let send = try installedAuthorizer([
            "send", "--target", "127.0.0.1:\(port)", "--id", "inst-1",
            "--account", "123", "--amount", "100.10", "--mcc", "5811", "--merchant", "PADARIA DO ZE",
        ], name: "send")
        XCTAssertEqual(send.waitForExit(timeout: 30), 0, send.output)
        XCTAssertTrue(send.output.contains(#"{"id":"inst-1","code":"00"}"#), send.output)
        XCTAssertEqual(try redis.balances("123")["MEAL"], 100_000 - 10_010)
    }

    /// Without the installed scripts, serve finds none: the checkout really is out of reach.
    func testWithoutTheInstalledScriptsServeFindsNone() throws {
        try FileManager.default.removeItem(at: installed("usr/share/authorizer/lua"))
        let serve = try installedAuthorizer(["serve", "--redis", redis.url, "--port", "0"], name: "serve")
        let status = serve.waitForExit(timeout: 30)
        XCTAssertNotNil(status, "serve exits")
        XCTAssertNotEqual(status, 0, serve.output)
        XCTAssertTrue(serve.output.contains("Lua scripts not found"), serve.output)
    }
}
