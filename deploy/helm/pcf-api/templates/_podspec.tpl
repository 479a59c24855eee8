{{/* Volumes and mounts shared by the app pods and the migration Job. */}}
{{- define "pcf-api.volumes" -}}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- if include "pcf-api.secretVolume" . }}
- name: secrets
  secret:
    secretName: {{ .secretName | default (include "pcf-api.secretName" .) }}
    defaultMode: 0440
    # Explicit (the Kubernetes default): podman kube play 4.x dereferences it unconditionally.
    optional: false
    items:
      {{- range $key, $entry := include "pcf-api.secretKeys" . | fromYaml }}
      - key: {{ $entry.file }}
        path: {{ $entry.file }}
      {{- end }}
{{- end }}
{{- if .Values.vault.enabled }}
# The Vault agent logs in with this token; the app container does not mount it.
- name: vault-token
  projected:
    sources:
      - serviceAccountToken:
          path: token
          audience: {{ .Values.vault.tokenAudience }}
          expirationSeconds: 3600
{{- end }}
{{- end -}}

{{- define "pcf-api.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if include "pcf-api.secretVolume" . }}
# The whole directory, never subPath: a Secret update reaches the files in place.
- name: secrets
  mountPath: {{ .Values.secrets.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}
