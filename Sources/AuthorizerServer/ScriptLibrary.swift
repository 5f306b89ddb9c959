import Foundation
import RedisWire

/// The Lua scripts, one file per atomic operation. Looked for, in order:
/// 1. `AUTHORIZER_LUA_DIR`, when set (an explicit choice wins);
/// 2. the install tree: `<prefix>/bin/authorizer` -> `<prefix>/share/authorizer/lua`
///    (what `make install` lays out), from the executable's real path;
/// 3. the source checkout: next to `.build/<config>/authorizer`, then the path
///    this file was compiled from, so a development build works from any
///    working directory. `AUTHORIZER_LUA_NO_CHECKOUT=1` skips these (an
///    installed binary must never pick up a checkout's scripts by accident,
///    and tests use it to prove the install tree alone is enough).
public struct ScriptLibrary: Sendable {
    public let authorize: LuaScript
    public let unlock: LuaScript
    public let decline: LuaScript
    public let adjust: LuaScript
    public let reverse: LuaScript
    public let balance: LuaScript
    public let card: LuaScript
    public let credit: LuaScript
    public let freeze: LuaScript
    public let revert: LuaScript

    public var all: [LuaScript] { [authorize, unlock, decline, adjust, reverse, balance, card, credit, freeze, revert] }

    public enum LoadError: Error, CustomStringConvertible {
        case notFound([String])
        public var description: String {
            switch self {
            case .notFound(let tried):
                return "Lua scripts not found (tried \(tried.joined(separator: ", "))); set AUTHORIZER_LUA_DIR to the repository's Lua folder"
            }
        }
    }

    public static func load(directory: String? = nil) throws -> ScriptLibrary {
        let directory = try directory ?? locate()
        func read(_ name: String) throws -> LuaScript {
            let path = (directory as NSString).appendingPathComponent("\(name).lua")
            return LuaScript(name: name, source: try String(contentsOfFile: path, encoding: .utf8))
        }
        return ScriptLibrary(
            authorize: try read("authorize"),
            unlock: try read("unlock"),
            decline: try read("decline"),
            adjust: try read("adjust"),
            reverse: try read("reverse"),
            balance: try read("balance"),
            card: try read("card"),
            credit: try read("credit"),
            freeze: try read("freeze"),
            revert: try read("revert")
        )
    }

    public static func locate(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        let candidates = candidates(environment: environment, executable: executablePath())
        for candidate in candidates where FileManager.default.fileExists(atPath: (candidate as NSString).appendingPathComponent("authorize.lua")) {
            return candidate
        }
        throw LoadError.notFound(candidates)
    }

    /// The directories `locate` tries, in order.
    public static func candidates(environment: [String: String], executable: String) -> [String] {
        var candidates: [String] = []
        if let fromEnvironment = environment["AUTHORIZER_LUA_DIR"], !fromEnvironment.isEmpty {
            candidates.append(fromEnvironment)
        }
        let binDirectory = URL(fileURLWithPath: executable).deletingLastPathComponent()
        // <prefix>/bin/authorizer -> <prefix>/share/authorizer/lua
        candidates.append(binDirectory.appendingPathComponent("../share/authorizer/lua").standardized.path)
        if environment["AUTHORIZER_LUA_NO_CHECKOUT"].map({ !$0.isEmpty && $0 != "0" }) ?? false {
            return candidates
        }
        // <checkout>/.build/<config>/authorizer or <checkout>/.build/<triple>/<config>/authorizer -> <checkout>/Lua
        candidates.append(binDirectory.appendingPathComponent("../../Lua").standardized.path)
        candidates.append(binDirectory.appendingPathComponent("../../../Lua").standardized.path)
        // <checkout>/Sources/AuthorizerServer/ScriptLibrary.swift -> <checkout>/Lua
        candidates.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Lua").standardized.path)
        return candidates
    }

    /// The running executable's real path (symlinks resolved), whatever
    /// argv[0] says (a bare name found through PATH, a relative path).
    static func executablePath() -> String {
        #if os(Linux)
        if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            return path
        }
        #endif
        if let path = Bundle.main.executablePath {
            return URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        }
        return URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
    }
}
