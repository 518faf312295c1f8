/// The placement of the tables of a feature whose store is `host`: the shared-memory region
/// named by `store.host`. One region per runtime: `StoreContext` calls this once and shares
/// the placement between all the runtime's tables.
func hostPlacement(_ settings: HostStoreSettings) throws(BitsecError) -> TablePlacement {
    _ = settings
    throw BitsecError(.notConfigured, "the host store is not available in this build")
}
