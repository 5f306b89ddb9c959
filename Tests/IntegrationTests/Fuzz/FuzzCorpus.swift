/// Seed lines for the terminal-protocol fuzzer: each is mutated, truncated
/// and spliced. Byte strings, because several are not valid UTF-8 on purpose.
enum FuzzCorpus {
    static let seeds: [[UInt8]] = text.map { Array($0.utf8) } + binary

    private static let text: [String] = [
        #"{"id":"x","account":"fzg","totalAmount":100.10,"mcc":"5811","merchant":"PADARIA DO ZE               SAO PAULO BR"}"#,
        #"{"account":"fzg","totalAmount":"1.00","mcc":"5411","merchant":"M"}"#,
        #"{"account":"fzg","totalAmount":1e309,"mcc":"5411","merchant":"M"}"#,
        #"{"account":"fzg","totalAmount":-0,"mcc":"5411","merchant":"M"}"#,
        #"{"account":"fzg","totalAmount":0.001,"mcc":"5411","merchant":"M"}"#,
        #"{"account":"fzg","totalAmount":"NaN","mcc":"5411","merchant":"M"}"#,
        #"{"account":"fzg","totalAmount":"Infinity","mcc":"5411","merchant":"M"}"#,
        #"{"account":"fzg","totalAmount":99999999999999999999999999999999999999,"mcc":"5411","merchant":"M"}"#,
        #"{"account":"fzg","totalAmount":1,"mcc":"5411","merchant":"M","account":"fz1"}"#,
        #"{"account":["fzg"],"totalAmount":{"v":1},"mcc":5411,"merchant":null}"#,
        #"{"account":"fzg","totalAmount":true,"mcc":"54111","merchant":""}"#,
        #"{"account":"fzg","totalAmount":1,"mcc":"5411","merchant":"\ud800"}"#,
        #"{"account":"fzg","totalAmount":1,"mcc":"5411","merchant":"\u0000"}"#,
        #"{"account":"{fzg}","totalAmount":1,"mcc":"5411","merchant":"M"}"#,
        #"{"account":"fzg","totalAmount":1,"mcc":"5411","merchant":"M","x":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"#,
        #"{"a":{"b":{"c":{"d":{"e":{"f":{"g":{"h":{}}}}}}}}}"#,
        #"[]"#, #"{}"#, #"null"#, #"""#, #"{"#, #"}"#, #"{"id":}"#, #"{"id":"a""#, #"{"id" "a"}"#,
        #"{"account":"fzg","totalAmount":01,"mcc":"5411","merchant":"M"}"#,
        #"{"account":"fzg","totalAmount":1.,"mcc":"5411","merchant":"M"}"#,
        #"{"account":"fzg","totalAmount":.5,"mcc":"5411","merchant":"M"}"#,
        #"{"account":"fzg","totalAmount":+1,"mcc":"5411","merchant":"M"}"#,
        #"{"account":"fzg","totalAmount":0x10,"mcc":"5411","merchant":"M"}"#,
        #"{"account":"fzg","totalAmount":1,"mcc":"5411","merchant":"M"} {"#,
        "\u{FEFF}{\"account\":\"fzg\",\"totalAmount\":1,\"mcc\":\"5411\",\"merchant\":\"M\"}",
        #"{"account":"fzg","totalAmount":1,"mcc":"٥٤١١","merchant":"M"}"#,
        #"{"account":"fzg","totalAmount":"１","mcc":"5411","merchant":"M"}"#,
    ]

    private static let binary: [[UInt8]] = [
        [0x00],
        [0x00, 0x7B, 0x7D],
        [0xFF, 0xFE, 0xFD],
        Array(#"{"account":"fzg","totalAmount":1,"mcc":"5411","merchant":""#.utf8) + [0xC3, 0x28] + Array(#""}"#.utf8),
        Array(#"{"account":"fzg","totalAmount":1,"mcc":"5411","merchant":""#.utf8) + [0xED, 0xA0, 0x80] + Array(#""}"#.utf8),
        Array(#"{"account":"fzg"#.utf8) + [0x00] + Array(#"0","totalAmount":1,"mcc":"5411","merchant":"M"}"#.utf8),
    ]
}
