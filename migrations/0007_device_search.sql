-- Device search at scale (1,000,000 devices): lists walk an index in id order and test each filter on index
-- tuples, fetching from the heap only the rows of the page. `devices_list` carries every filtered column, so a
-- filter that keeps one device in twenty costs twenty index tuples per listed device, not twenty heap fetches
-- (see controlplane/src/api/device_search.rs).
CREATE INDEX devices_list ON devices (provider_id, id)
    INCLUDE (pop_id, vendor, tags, mgmt_ip, last_seen, serial_number, name);
-- Filters that combine vendor with tags, status or an address range walk the vendor index the same way.
DROP INDEX devices_vendor;
CREATE INDEX devices_vendor ON devices (provider_id, vendor, id) INCLUDE (pop_id, tags, mgmt_ip, last_seen)
    WHERE vendor IS NOT NULL;
