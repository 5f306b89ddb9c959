import Foundation
import RedisWire

/// The Lua scripts, read from the repository's `Lua/` folder (the one source
/// of truth). Found through `AUTHORIZER_LUA_DIR`, then next to the
/// executable's checkout, then through the path this file was compiled from,
/// so the binary works from any working directory.
public struct ScriptLibrary: Sendable {
    public let authorize: LuaScript
    public let unlock: LuaScript
    public let decline: LuaScript
    public let adjust: LuaScript
    public let reverse: LuaScript
    public let balance: LuaScript

    public var all: [LuaScript] { [authorize, unlock, decline, adjust, reverse, balance] }

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
            balance: try read("balance")
        )
    }

    public static func locate() throws -> String {
        var candidates: [String] = []
        if let fromEnvironment = ProcessInfo.processInfo.environment["AUTHORIZER_LUA_DIR"] {
            candidates.append(fromEnvironment)
        }
        // <checkout>/.build/<config>/authorizer -> <checkout>/Lua
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        candidates.append(executable.deletingLastPathComponent().appendingPathComponent("../../Lua").standardized.path)
        candidates.append(executable.deletingLastPathComponent().appendingPathComponent("../../../Lua").standardized.path)
        // <checkout>/Sources/AuthorizerServer/ScriptLibrary.swift -> <checkout>/Lua
        candidates.append(URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../Lua").standardized.path)
        for candidate in candidates where FileManager.default.fileExists(atPath: (candidate as NSString).appendingPathComponent("authorize.lua")) {
            return candidate
        }
        throw LoadError.notFound(candidates)
    }
}
