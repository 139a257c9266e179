// Shapes of the API's answers (see /api/v1/openapi.json).
export interface Page<T> { items: T[]; next_cursor: string | null }
export interface Me { user_id: string | null; api_key_id: string | null; provider_id: string | null; global_admin: boolean; permissions: string[] }
export interface Summary {
  devices: { total: number; online: number; offline: number } | null;
  pops: { total: number } | null;
  agents: { total: number; active: number; revoked: number; last_contact: string | null } | null;
  online_threshold_secs: number;
}
export interface Pop { id: string; provider_id: string; slug: string; name: string; created_at: string }
export interface Agent {
  id: string; provider_id: string; pop_id: string; hostname: string; version: string; cert_fingerprint: string;
  enrolled_at: string; last_seen: string | null; revoked_at: string | null;
}
export interface Device {
  id: string; provider_id: string; pop_id: string; customer_id: string | null; name: string | null; device_key: string;
  vendor: string | null; model: string | null; serial_number: string | null; oui: string | null; product_class: string | null;
  firmware: string | null; mgmt_ip: string | null; tags: string[]; first_seen: string; last_seen: string; online: boolean;
}
export interface User {
  id: string; provider_id: string | null; email: string; name: string; role_id: string; role_name: string;
  extra_permissions: string[]; disabled_at: string | null; created_at: string; last_login_at: string | null;
}
export interface Role { id: string; provider_id: string | null; name: string; description: string; permissions: string[] }
export interface AuditEntry {
  id: number; provider_id: string | null; ts: string; actor_user_id: string | null; actor_api_key_id: string | null;
  action: string; target_type: string; target_id: string | null; ip: string | null; request_id: string | null;
}
export interface EnrollmentToken { token_id: string; secret: string; token: string | null; expires_at: string }
