// This target exists only to carry the linker flags of libbitsec.so (see Package.swift).
// Its dependency on Bitsec pulls the whole C ABI into the shared library.
internal import Bitsec
