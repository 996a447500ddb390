"""Getting notebooks into users' hub homes: nbgitpuller links (:mod:`nbplugins.hub.links`)
and the hubs they point at (:mod:`nbplugins.hub.hubs`)."""
