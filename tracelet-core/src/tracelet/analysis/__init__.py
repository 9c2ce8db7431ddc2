"""Analysis of runs in the local store: anomaly detection and queries."""

from tracelet.analysis.detector import AnomalyDetector as AnomalyDetector
from tracelet.analysis.detector import LiveDetector as LiveDetector
from tracelet.analysis.query import QueryEngine as QueryEngine
from tracelet.analysis.rules import DetectorConfig as DetectorConfig
from tracelet.analysis.rules import GradientThresholds as GradientThresholds
from tracelet.analysis.rules import LossSpikeThresholds as LossSpikeThresholds
from tracelet.analysis.rules import MemoryThresholds as MemoryThresholds
from tracelet.analysis.rules import NonFiniteThresholds as NonFiniteThresholds
