"""Point clouds as metric-measure spaces: GW without ``n x n`` matrices."""

from gwlite.pointcloud._cloud import CHUNK_ENTRIES, METRICS, PointCloud, is_point_cloud

__all__ = ["CHUNK_ENTRIES", "METRICS", "PointCloud", "is_point_cloud"]
