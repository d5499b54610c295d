package main

// The checks after decoding: each one is something the API server or an operator would
// refuse, or that would be accepted and then not work (a probe on a port no container
// names, a KEDA trigger watching another consumer group than the pods join).

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// The ConfigMap limit of the API server (etcd's request size, less room).
const maxConfigMapBytes = 1 << 20

// A StatefulSet's pods carry the label controller-revision-hash=<name>-<hash of 10>, and a
// label value has at most 63 characters.
const maxStatefulSetName = 52

type checker struct {
	problems []string
	sets     []*appsv1.StatefulSet
	services map[string]*corev1.Service
	byKind   map[string]map[string]bool // kind -> names
}

func (c *checker) addf(source, format string, args ...any) {
	c.problems = append(c.problems, source+": "+fmt.Sprintf(format, args...))
}

func (c *checker) errs(source string, errs field.ErrorList) {
	for _, e := range errs {
		c.addf(source, "%v", e)
	}
}

func check(objs []object) []string {
	c := &checker{services: map[string]*corev1.Service{}, byKind: map[string]map[string]bool{}}
	for _, o := range objs {
		m, err := meta.Accessor(o.obj)
		if err != nil {
			c.addf(o.source, "no metadata: %v", err)
			continue
		}
		kind := o.obj.GetObjectKind().GroupVersionKind().Kind
		c.metadata(o.source, kind, m)
		if c.byKind[kind] == nil {
			c.byKind[kind] = map[string]bool{}
		}
		if c.byKind[kind][m.GetName()] {
			c.addf(o.source, "a second %s named %q", kind, m.GetName())
		}
		c.byKind[kind][m.GetName()] = true
		switch v := o.obj.(type) {
		case *appsv1.StatefulSet:
			c.sets = append(c.sets, v)
		case *corev1.Service:
			c.services[v.Name] = v
		}
	}
	if len(c.sets) != 1 {
		c.problems = append(c.problems, fmt.Sprintf("the chart renders one StatefulSet, here %d", len(c.sets)))
	}
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *appsv1.StatefulSet:
			c.statefulSet(o.source, v)
		case *corev1.Service:
			c.service(o.source, v)
		case *policyv1.PodDisruptionBudget:
			c.pdb(o.source, v)
		case *corev1.ConfigMap:
			c.configMap(o.source, v)
		case *monitoringv1.PodMonitor:
			c.podMonitor(o.source, v, objs)
		case *kedav1alpha1.ScaledObject:
			c.scaledObject(o.source, v)
		case *kedav1alpha1.TriggerAuthentication:
			c.triggerAuthentication(o.source, v)
		}
	}
	return c.problems
}

func (c *checker) metadata(source, kind string, m metav1.Object) {
	path := field.NewPath("metadata")
	if m.GetName() == "" {
		c.addf(source, "%s without metadata.name", kind)
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(m.GetName()) {
			c.addf(source, "metadata.name %q: %s", m.GetName(), msg)
		}
	}
	if kind == "Service" {
		for _, msg := range validation.IsDNS1035Label(m.GetName()) {
			c.addf(source, "a Service's name %q: %s", m.GetName(), msg)
		}
	}
	c.errs(source, metavalidation.ValidateLabels(m.GetLabels(), path.Child("labels")))
	c.errs(source, apivalidation.ValidateAnnotations(m.GetAnnotations(), path.Child("annotations")))
}

// pods is the template of the one StatefulSet, or nil.
func (c *checker) pods() *corev1.PodTemplateSpec {
	if len(c.sets) == 0 {
		return nil
	}
	return &c.sets[0].Spec.Template
}

func (c *checker) selects(source, what string, sel *metav1.LabelSelector) {
	pods := c.pods()
	if pods == nil {
		return
	}
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		c.addf(source, "%s: an empty selector selects every pod of the namespace", what)
		return
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		c.addf(source, "%s: %v", what, err)
		return
	}
	if !s.Matches(labels.Set(pods.Labels)) {
		c.addf(source, "%s %v does not select the StatefulSet's pods (labels %v)", what, s, pods.Labels)
	}
}

func (c *checker) statefulSet(source string, s *appsv1.StatefulSet) {
	if len(s.Name) > maxStatefulSetName {
		c.addf(source, "StatefulSet name %q is longer than %d characters: its pods' controller-revision-hash label would exceed 63", s.Name, maxStatefulSetName)
	}
	c.selects(source, "spec.selector", s.Spec.Selector)
	svc, ok := c.services[s.Spec.ServiceName]
	switch {
	case s.Spec.ServiceName == "":
		c.addf(source, "spec.serviceName is empty: the pods get no stable DNS names")
	case !ok:
		c.addf(source, "spec.serviceName %q names no Service of the chart", s.Spec.ServiceName)
	case svc.Spec.ClusterIP != corev1.ClusterIPNone:
		c.addf(source, "spec.serviceName %q is not headless (clusterIP: None)", s.Spec.ServiceName)
	}
	spec := &s.Spec.Template.Spec
	if spec.TerminationGracePeriodSeconds == nil || *spec.TerminationGracePeriodSeconds <= 0 {
		c.addf(source, "terminationGracePeriodSeconds must be set above 0: the final checkpoint needs it")
	}
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			c.addf(source, "volume %q: %s", v.Name, msg)
		}
		if volumes[v.Name] {
			c.addf(source, "two volumes named %q", v.Name)
		}
		volumes[v.Name] = true
	}
	if len(spec.Containers) == 0 {
		c.addf(source, "no containers")
	}
	for i := range spec.Containers {
		c.container(source, &spec.Containers[i], volumes)
	}
}

func (c *checker) container(source string, ct *corev1.Container, volumes map[string]bool) {
	where := fmt.Sprintf("container %q", ct.Name)
	for _, msg := range validation.IsDNS1123Label(ct.Name) {
		c.addf(source, "%s: name: %s", where, msg)
	}
	if ct.Image == "" || strings.HasSuffix(ct.Image, ":") {
		c.addf(source, "%s: image %q has no repository or tag", where, ct.Image)
	}
	ports := map[string]bool{}
	for _, p := range ct.Ports {
		if p.ContainerPort < 1 || p.ContainerPort > 65535 {
			c.addf(source, "%s: containerPort %d is not a port", where, p.ContainerPort)
		}
		if p.Name != "" {
			for _, msg := range validation.IsValidPortName(p.Name) {
				c.addf(source, "%s: port name %q: %s", where, p.Name, msg)
			}
			if ports[p.Name] {
				c.addf(source, "%s: two ports named %q", where, p.Name)
			}
			ports[p.Name] = true
		}
	}
	for name, pr := range map[string]*corev1.Probe{"readinessProbe": ct.ReadinessProbe, "livenessProbe": ct.LivenessProbe, "startupProbe": ct.StartupProbe} {
		if pr == nil {
			continue
		}
		if pr.HTTPGet == nil {
			c.addf(source, "%s: %s is not an HTTP GET (pageviews answers /healthz)", where, name)
			continue
		}
		if pr.HTTPGet.Port.Type == intstr.String && !ports[pr.HTTPGet.Port.StrVal] {
			c.addf(source, "%s: %s names port %q, which the container does not declare", where, name, pr.HTTPGet.Port.StrVal)
		}
		if pr.FailureThreshold < 0 || pr.PeriodSeconds < 0 || pr.TimeoutSeconds < 0 {
			c.addf(source, "%s: %s has a negative setting", where, name)
		}
	}
	// Kubernetes expands $(NAME) in a value from the variables defined before it, and
	// leaves a reference to any other as it is.
	defined := map[string]bool{}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)`)
	for _, e := range ct.Env {
		for _, msg := range validation.IsEnvVarName(e.Name) {
			c.addf(source, "%s: env %q: %s", where, e.Name, msg)
		}
		if defined[e.Name] {
			c.addf(source, "%s: env %q is set twice; the last wins", where, e.Name)
		}
		for _, m := range ref.FindAllStringSubmatch(e.Value, -1) {
			if !defined[m[1]] {
				c.addf(source, "%s: env %q refers to $(%s), which no variable before it sets", where, e.Name, m[1])
			}
		}
		if e.ValueFrom != nil {
			if e.Value != "" {
				c.addf(source, "%s: env %q has both value and valueFrom", where, e.Name)
			}
			if r := e.ValueFrom.SecretKeyRef; r != nil {
				if r.Name == "" {
					c.addf(source, "%s: env %q: secretKeyRef without a Secret name", where, e.Name)
				}
				for _, msg := range validation.IsConfigMapKey(r.Key) {
					c.addf(source, "%s: env %q: secretKeyRef key %q: %s", where, e.Name, r.Key, msg)
				}
			}
		}
		defined[e.Name] = true
	}
	for _, m := range ct.VolumeMounts {
		if !volumes[m.Name] {
			c.addf(source, "%s: volumeMount %q names no volume", where, m.Name)
		}
	}
	for name, req := range ct.Resources.Requests {
		if lim, ok := ct.Resources.Limits[name]; ok && req.Cmp(lim) > 0 {
			c.addf(source, "%s: %s request %s is above its limit %s", where, name, req.String(), lim.String())
		}
	}
}

func (c *checker) service(source string, s *corev1.Service) {
	if len(s.Spec.Selector) == 0 {
		c.addf(source, "a Service without a selector")
		return
	}
	c.selects(source, "spec.selector", &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
	if pods := c.pods(); pods != nil {
		for _, p := range s.Spec.Ports {
			if p.TargetPort.Type == intstr.String && !podPort(pods, p.TargetPort.StrVal) {
				c.addf(source, "port %q targets %q, which no container declares", p.Name, p.TargetPort.StrVal)
			}
		}
	}
}

func podPort(pods *corev1.PodTemplateSpec, name string) bool {
	for _, ct := range pods.Spec.Containers {
		for _, p := range ct.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}

func (c *checker) pdb(source string, p *policyv1.PodDisruptionBudget) {
	if (p.Spec.MinAvailable == nil) == (p.Spec.MaxUnavailable == nil) {
		c.addf(source, "set exactly one of minAvailable and maxUnavailable")
	}
	c.selects(source, "spec.selector", p.Spec.Selector)
}

var dashboardJob = regexp.MustCompile(`job=\\?"([^"\\]+)\\?"`)

func (c *checker) configMap(source string, cm *corev1.ConfigMap) {
	size := 0
	for k, v := range cm.Data {
		size += len(k) + len(v)
		for _, msg := range validation.IsConfigMapKey(k) {
			c.addf(source, "key %q: %s", k, msg)
		}
		if strings.HasSuffix(k, ".json") {
			var d struct {
				UID   string `json:"uid"`
				Title string `json:"title"`
			}
			if err := json.Unmarshal([]byte(v), &d); err != nil {
				c.addf(source, "%s is not JSON: %v", k, err)
			} else if d.UID == "" || d.Title == "" {
				c.addf(source, "%s is not a Grafana dashboard (no uid or title)", k)
			}
			if strings.Contains(v, `"uid": "pageviews-prometheus"`) {
				c.addf(source, "%s still names the datasource of deploy/grafana/provisioning", k)
			}
		}
	}
	for k, v := range cm.BinaryData {
		size += len(k) + len(v)
	}
	if size > maxConfigMapBytes {
		c.addf(source, "%d bytes of data, over a ConfigMap's 1 MiB", size)
	}
}

func (c *checker) podMonitor(source string, pm *monitoringv1.PodMonitor, objs []object) {
	c.selects(source, "spec.selector", &pm.Spec.Selector)
	if len(pm.Spec.PodMetricsEndpoints) == 0 {
		c.addf(source, "no podMetricsEndpoints")
	}
	// The job the dashboards select must be the one the scrape sets.
	jobs := map[string]bool{}
	for _, o := range objs {
		if cm, ok := o.obj.(*corev1.ConfigMap); ok {
			for k, v := range cm.Data {
				if strings.HasPrefix(k, "pageviews.json") {
					for _, m := range dashboardJob.FindAllStringSubmatch(v, -1) {
						jobs[m[1]] = true
					}
				}
			}
		}
	}
	for i, ep := range pm.Spec.PodMetricsEndpoints {
		where := fmt.Sprintf("podMetricsEndpoints[%d]", i)
		if ep.Port == nil || *ep.Port == "" {
			c.addf(source, "%s names no port", where)
		} else if pods := c.pods(); pods != nil && !podPort(pods, *ep.Port) {
			c.addf(source, "%s: port %q is declared by no container of the pods", where, *ep.Port)
		}
		job := ""
		for _, r := range ep.RelabelConfigs {
			if r.Action != "" && !validRelabelAction[strings.ToLower(r.Action)] {
				c.addf(source, "%s: relabeling action %q is not one of Prometheus's", where, r.Action)
			}
			if r.TargetLabel == "job" && r.Replacement != nil {
				job = *r.Replacement
			}
		}
		for j := range jobs {
			if j != job {
				c.addf(source, "%s: the dashboards select job=%q, the scrape sets job=%q", where, j, job)
			}
		}
	}
}

var validRelabelAction = map[string]bool{
	"replace": true, "keep": true, "drop": true, "hashmod": true, "labelmap": true, "labeldrop": true,
	"labelkeep": true, "lowercase": true, "uppercase": true, "keepequal": true, "dropequal": true,
}

// The trigger metadata KEDA's Kafka scaler reads (pkg/scalers/kafka_scaler.go); any other
// key is ignored by KEDA, so a misspelt one would silently fall back to its default.
var kafkaTriggerKeys = map[string]bool{
	"bootstrapServers": true, "consumerGroup": true, "topic": true, "partitionLimitation": true,
	"lagThreshold": true, "activationLagThreshold": true, "offsetResetPolicy": true,
	"allowIdleConsumers": true, "excludePersistentLag": true, "scaleToZeroOnInvalidOffset": true,
	"limitToPartitionsWithLag": true, "ensureEvenDistributionOfPartitions": true,
	"fullMetadata": true, "version": true, "tls": true, "unsafeSsl": true, "sasl": true,
	"saslTokenProvider": true, "awsRegion": true,
}

// Its parameters that a TriggerAuthentication may supply.
var kafkaAuthParams = map[string]bool{
	"tls": true, "ca": true, "cert": true, "key": true, "keyPassword": true, "sasl": true,
	"username": true, "password": true, "saslTokenProvider": true, "scopes": true,
	"oauthTokenEndpointUri": true, "oauthExtensions": true, "keytab": true, "ccacheName": true,
	"realm": true, "kerberosConfig": true, "kerberosServiceName": true, "kerberosDisableFAST": true,
}

func (c *checker) scaledObject(source string, so *kedav1alpha1.ScaledObject) {
	// KEDA's own admission checks that need no cluster.
	for _, err := range []error{
		kedav1alpha1.CheckReplicaCountBoundsAreValid(so),
		kedav1alpha1.CheckFallbackValid(so),
		kedav1alpha1.ValidateTriggers(so.Spec.Triggers),
	} {
		if err != nil {
			c.addf(source, "KEDA would refuse it: %v", err)
		}
	}
	ref := so.Spec.ScaleTargetRef
	if ref == nil {
		c.addf(source, "no scaleTargetRef")
		return
	}
	if len(c.sets) == 0 {
		return // already reported: there is nothing to compare the target with
	}
	var target *appsv1.StatefulSet
	for _, s := range c.sets {
		if s.Name == ref.Name {
			target = s
		}
	}
	if ref.Kind != "StatefulSet" || ref.APIVersion != "apps/v1" || target == nil {
		c.addf(source, "scaleTargetRef %s %s %q is not the chart's StatefulSet", ref.APIVersion, ref.Kind, ref.Name)
		return
	}
	if target.Spec.Replicas != nil {
		c.addf(source, "the StatefulSet sets spec.replicas, which every upgrade would reset under KEDA's HPA")
	}
	env := map[string]string{}
	for _, ct := range target.Spec.Template.Spec.Containers {
		for _, e := range ct.Env {
			env[e.Name] = e.Value
		}
	}
	for i, t := range so.Spec.Triggers {
		where := fmt.Sprintf("triggers[%d]", i)
		if t.Type != "kafka" {
			c.addf(source, "%s: type %q, not kafka", where, t.Type)
			continue
		}
		for k := range t.Metadata {
			if !kafkaTriggerKeys[k] {
				c.addf(source, "%s: metadata %q is not a setting of KEDA's Kafka scaler", where, k)
			}
		}
		// The scaler must watch the group and topic the pods consume with.
		for key, envName := range map[string]string{"bootstrapServers": "KAFKA_BOOTSTRAP", "consumerGroup": "CONSUMER_GROUP", "topic": "KAFKA_TOPIC"} {
			if t.Metadata[key] == "" {
				c.addf(source, "%s: metadata %s is required", where, key)
			} else if t.Metadata[key] != env[envName] {
				c.addf(source, "%s: metadata %s is %q but the pods' %s is %q", where, key, t.Metadata[key], envName, env[envName])
			}
		}
		if n, err := strconv.ParseInt(t.Metadata["lagThreshold"], 10, 64); err != nil || n <= 0 {
			c.addf(source, "%s: lagThreshold %q is not a positive integer", where, t.Metadata["lagThreshold"])
		}
		if p := t.Metadata["offsetResetPolicy"]; p != "" && p != "earliest" && p != "latest" {
			c.addf(source, "%s: offsetResetPolicy %q is neither earliest nor latest", where, p)
		}
		if a := t.AuthenticationRef; a != nil && (a.Kind == "" || a.Kind == "TriggerAuthentication") && !c.byKind["TriggerAuthentication"][a.Name] {
			c.addf(source, "%s: authenticationRef %q names no TriggerAuthentication of the chart", where, a.Name)
		}
	}
}

func (c *checker) triggerAuthentication(source string, ta *kedav1alpha1.TriggerAuthentication) {
	if len(ta.Spec.SecretTargetRef) == 0 {
		c.addf(source, "no secretTargetRef")
	}
	for i, r := range ta.Spec.SecretTargetRef {
		if !kafkaAuthParams[r.Parameter] {
			c.addf(source, "secretTargetRef[%d]: parameter %q is not one KEDA's Kafka scaler reads", i, r.Parameter)
		}
		if r.Name == "" {
			c.addf(source, "secretTargetRef[%d]: no Secret name", i)
		}
		for _, msg := range validation.IsConfigMapKey(r.Key) {
			c.addf(source, "secretTargetRef[%d]: key %q: %s", i, r.Key, msg)
		}
	}
}
