/// The placement of the tables of a feature whose store is `host`: the shared-memory region
/// named by `store.host`. One region per runtime: `StoreContext` calls this once and shares
/// the placement between all the runtime's tables.
func hostPlacement(_ settings: HostStoreSettings) throws(BitsecError) -> TablePlacement {
    guard let name = settings.name else {
        throw BitsecError(.config, "store.host.name is required when a feature uses the host store")
    }
    return .host(try SharedRegion.open(name: name, directory: settings.directory, maxBytes: Int(settings.maxBytes)))
}
