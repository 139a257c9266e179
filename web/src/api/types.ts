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

export type Severity = 'info' | 'warning' | 'critical';
export interface Alert {
  id: string; rule_id: string; rule_name: string; target: string; device_id: string | null; pop_id: string | null;
  series_id: number | null; state: 'firing' | 'resolved'; severity: Severity; value: number | null; occurrences: number;
  flapping: boolean; inhibited_by: string | null; acknowledged_by: string | null; acknowledged_at: string | null;
  started_at: string; resolved_at: string | null; manual: boolean;
}
export interface AlertEvent {
  id: number; alert_id: string; rule_id: string | null; kind: string; severity: Severity; device_id: string | null;
  pop_id: string | null; suppressed: string | null; rule_name: string; target: string; facts: Record<string, unknown>;
  event_ts: string | null; created_at: string;
}
export interface AlertRule {
  id: string; rule_key: string; name: string; scope: string; scope_id: string | null; metric: string; kind: string;
  op: string | null; threshold: number | null; recover_threshold: number | null; low: number | null; high: number | null;
  hysteresis: number; absence_secs: number | null; severity: Severity; for_secs: number; recover_for_secs: number;
  missing_data: string; flap_enabled: boolean; flap_window: number; flap_high: number; flap_low: number;
  is_uplink: boolean; enabled: boolean; created_at: string; updated_at: string;
}
/** `POST /alert-rules/preview`: what a rule would have fired on the stored samples of a range. */
export interface PreviewInterval { start: string; end: string | null; worst: number | null; flapping: boolean }
export interface PreviewTarget {
  target_key: string; series_id: number | null; device_id: string; device_name: string; pop_id: string;
  labels: Record<string, string>; intervals: PreviewInterval[]; intervals_left_out: number; firing_secs: number;
  notifications: number;
}
export interface RulePreview {
  from: string; to: string; targets_evaluated: number; targets_not_evaluated: number; targets_overridden: number;
  samples_read: number; samples_truncated: boolean; targets_fired: number; devices_fired: number;
  intervals_total: number; notifications_total: number; targets: PreviewTarget[]; targets_left_out: number;
}
export interface Silence {
  id: string; rule_id: string | null; device_id: string | null; pop_id: string | null; starts_at: string; ends_at: string;
  created_by: string | null; reason: string; created_at: string;
}
export interface MaintenanceWindow {
  id: string; scope: string; scope_id: string | null; starts_at: string; ends_at: string; created_by: string | null;
  reason: string; created_at: string;
}
