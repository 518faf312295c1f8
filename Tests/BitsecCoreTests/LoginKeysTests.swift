import Testing
import BitsecCore

@Suite struct LoginKeysTests {
    /// Spellings a person cannot tell apart are one account (NFKC_Casefold).
    @Test func accountsAreFoldedWithNFKCCaseFold() {
        #expect(LoginKeys.account("Vera") == "vera")
        #expect(LoginKeys.account("VERA") == "vera")
        #expect(LoginKeys.account("ＶＥＲＡ") == "vera")            // fullwidth
        #expect(LoginKeys.account("ve\u{AD}ra\u{200B}") == "vera")  // soft hyphen, zero-width space
        #expect(LoginKeys.account("Straße") == "strasse")            // full case folding
        #expect(LoginKeys.account("ﬁona") == "fiona")                 // ligature
        #expect(LoginKeys.account("𝐯𝐞𝐫𝐚") == "vera")                 // mathematical bold
        #expect(LoginKeys.account("e\u{301}lodie") == LoginKeys.account("\u{C9}LODIE"))  // NFD vs NFC, case
        #expect(LoginKeys.account("ΟΔΥΣΣΕΥΣ") == LoginKeys.account("οδυσσευς"))
        #expect(LoginKeys.account("vera") != LoginKeys.account("vera2"))
    }

    /// Canonically equivalent spellings are one account, also when a mark the fold turns into
    /// a letter (U+0345, of combining class 240) is typed before another mark: the name is
    /// put in canonical order before it is mapped (toNFKC_Casefold maps NFD(X)). Each of these
    /// had its own key, and so its own failure budget.
    @Test func canonicallyEquivalentSpellingsAreOneAccount() {
        let nfc = LoginKeys.account("\u{398}\u{3C1}\u{1FB4}\u{3BA}\u{3B7}")          // Θρᾴκη
        #expect(nfc == "\u{3B8}\u{3C1}\u{3AC}\u{3B9}\u{3BA}\u{3B7}")
        #expect(LoginKeys.account("\u{398}\u{3C1}\u{3B1}\u{301}\u{345}\u{3BA}\u{3B7}") == nfc)  // NFD
        #expect(LoginKeys.account("\u{398}\u{3C1}\u{3B1}\u{345}\u{301}\u{3BA}\u{3B7}") == nfc)  // marks swapped
        #expect(LoginKeys.account("k\u{345}\u{301}\u{323}") == LoginKeys.account("\u{1E33}\u{301}\u{345}"))
        // NFC composes U+0345 into its letter past a mark of a lower class that stays apart
        // (α U+0316 U+0301 U+0345 is ᾴ U+0316): the ι still goes last in the sequence, as
        // toNFKC_Casefold puts it, so the capital spelling (no composed form) is the same key.
        let lower = LoginKeys.account("m\u{3B1}\u{316}\u{301}\u{345}ria")
        #expect(lower == "m\u{3AC}\u{316}\u{3B9}ria")
        #expect(LoginKeys.account("M\u{391}\u{316}\u{301}\u{345}RIA") == lower)
        #expect(LoginKeys.account("\u{345}") == "\u{3B9}" && LoginKeys.account("\u{1FBC}") == "\u{3B1}\u{3B9}")
        // The standard library's NFC composed z with U+0301 across U+0F81 (z U+0342 U+0F81 U+0301
        // became ź U+0342 U+0F71 U+0F80): the name's own NFD spelling was another account, and
        // another name's (ź U+0F71 U+0F80 U+0342) the same one.
        let tibetan = LoginKeys.account("z\u{342}\u{F81}\u{301}")
        #expect(tibetan == "z\u{F71}\u{F80}\u{342}\u{301}")
        #expect(LoginKeys.account("z\u{F71}\u{F80}\u{342}\u{301}") == tibetan)
        #expect(LoginKeys.account("\u{17A}\u{F71}\u{F80}\u{342}") != tibetan)
        #expect(LoginKeys.account("z\u{342}\u{F73}\u{301}") == "z\u{F71}\u{F72}\u{342}\u{301}")
        #expect(LoginKeys.account("a\u{342}\u{F75}\u{301}") == "a\u{F71}\u{F74}\u{342}\u{301}")
    }

    @Test func clientsAreGroupedByPrefix() {
        #expect(LoginKeys.client("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64")
        #expect(LoginKeys.client("2001:DB8:1:2:ffff::1") == "2001:db8:1:2::/64")
        #expect(LoginKeys.client("2001:db8:1:2::1", ipv6Prefix: 128) == "2001:db8:1:2::1")
        #expect(LoginKeys.client("2001:db8:0:0:1:0:0:1", ipv6Prefix: 128) == "2001:db8::1:0:0:1")
        #expect(LoginKeys.client("::ffff:192.0.2.1") == "192.0.2.1")
        #expect(LoginKeys.client("192.0.2.77") == "192.0.2.77")
        #expect(LoginKeys.client("192.0.2.77", ipv4Prefix: 24) == "192.0.2.0/24")
        #expect(LoginKeys.client("::1") == "::/64")
        // An IPv6 zone is dropped: one link-local client whatever interface names it.
        #expect(LoginKeys.client("fe80::1%eth0") == "fe80::/64")
        #expect(LoginKeys.client("fe80::1%eth1", ipv6Prefix: 128) == "fe80::1")
        #expect(LoginKeys.client("FE80::1%25", ipv6Prefix: 128) == "fe80::1")
        #expect(LoginKeys.client("::ffff:192.0.2.1%eth0") == "192.0.2.1")
        for notIP in ["localhost", "fe80::1%", "%eth0", "192.0.2.1%eth0", "fe80::1%%eth0x%", "fe80::g%eth0", "01.2.3.4", "1.2.3", "1.2.3.256", "1:2:3:4:5:6:7:8:9", "1::2::3", ":1", "testclient", ""] {
            #expect(LoginKeys.client(notIP) == notIP)
        }
    }
}
